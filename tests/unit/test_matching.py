"""Alertmanager label matcher syntax and semantics (healer.matching)."""

from __future__ import annotations

import pytest

from healer.errors import MatcherSyntaxError
from healer.matching import LabelSelector, Matcher, MatchType, parse_matcher, parse_matchers


def m(text: str) -> Matcher:
    return parse_matcher(text)


# --- operators -----------------------------------------------------------------------


def test_equal_matches_only_the_exact_value() -> None:
    """`=` is plain string equality."""
    assert m('team="db"').matches({"team": "db"})
    assert not m('team="db"').matches({"team": "dba"})


def test_not_equal_matches_any_other_value() -> None:
    """`!=` is the negation of `=`."""
    assert m('team!="db"').matches({"team": "web"})
    assert not m('team!="db"').matches({"team": "db"})


def test_regex_matches_the_pattern() -> None:
    """`=~` matches when the regex matches the label value."""
    assert m('severity=~"P[0-2]"').matches({"severity": "P1"})
    assert not m('severity=~"P[0-2]"').matches({"severity": "P3"})


def test_not_regex_matches_when_the_pattern_does_not() -> None:
    """`!~` is the negation of `=~`."""
    assert m('severity!~"P[0-2]"').matches({"severity": "P3"})
    assert not m('severity!~"P[0-2]"').matches({"severity": "P1"})


def test_parsed_operator_types() -> None:
    """Each operator token parses to its MatchType."""
    types = [x.type for x in parse_matchers('a="1", b!="1", c=~"1", d!~"1"')]
    assert types == [MatchType.EQ, MatchType.NE, MatchType.RE, MatchType.NRE]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('team="x"', False),
        ('team!="x"', True),
        ('team=~"x"', False),
        ('team!~"x"', True),
        ('team=""', True),
        ('team!=""', False),
        ('team=~".*"', True),
        ('team=~".+"', False),
        ('team!~".+"', True),
    ],
)
def test_missing_label_counts_as_empty_string(text: str, expected: bool) -> None:
    """A label absent from the alert is matched as if it were "" (Alertmanager semantics)."""
    assert m(text).matches({"other": "x"}) is expected


# --- regex anchoring and dialect ---------------------------------------------------------


@pytest.mark.parametrize("value", ["P01", "xP0", "P0x"])
def test_regex_is_anchored_at_both_ends(value: str) -> None:
    """`=~"P0"` must match the whole value, not a substring."""
    assert not m('severity=~"P0"').matches({"severity": value})


@pytest.mark.parametrize(
    ("value", "expected"), [("P0", True), ("P1", True), ("xP1", False), ("P1x", False)]
)
def test_alternation_is_anchored_as_a_whole(value: str, expected: bool) -> None:
    """`=~"P0|P1"` is `^(?:P0|P1)$`, not `^P0|P1$`."""
    assert m('severity=~"P0|P1"').matches({"severity": value}) is expected


def test_regex_end_anchor_does_not_accept_a_trailing_newline() -> None:
    """Go's `$` is end of text; Python's `$` would also accept "P0\\n"."""
    assert not m('severity=~"P0"').matches({"severity": "P0\n"})


def test_regex_wrapping_is_textual_like_alertmanager() -> None:
    """`a)|(b` becomes `^(?:a)|(b)$` in Alertmanager too: it matches anything starting with a."""
    matcher = m('x=~"a)|(b"')
    assert matcher.matches({"x": "a-and-more"})
    assert matcher.matches({"x": "more-then-b"})
    assert not matcher.matches({"x": "neither"})


def test_leading_case_insensitive_flag_is_supported() -> None:
    """`(?i)` at the start of a value works as in Go even though it lands inside a group."""
    assert m('severity=~"(?i)critical"').matches({"severity": "CRITICAL"})


def test_regex_classes_are_ascii_like_re2() -> None:
    """RE2's \\d is [0-9]: Arabic-Indic digits do not match it."""
    matcher = m('code=~"\\\\d+"')
    assert matcher.matches({"code": "503"})
    assert not matcher.matches({"code": "\u0665\u0660\u0663"})


def test_regex_is_compiled_once_at_construction() -> None:
    """Regex matchers carry their compiled, anchored pattern; others carry none."""
    assert m('a=~"x|y"').regex is not None
    assert m('a="x|y"').regex is None


def test_bad_regex_in_constructor_raises() -> None:
    """Building a Matcher directly validates the regex too."""
    with pytest.raises(MatcherSyntaxError, match="invalid regular expression"):
        Matcher("a", MatchType.RE, "(")


def test_bad_label_name_in_constructor_raises() -> None:
    """Building a Matcher directly validates the label name too."""
    with pytest.raises(MatcherSyntaxError, match="invalid label name"):
        Matcher("bad-name", MatchType.EQ, "x")


# --- quoting and escapes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r'q="say \"hi\""', 'say "hi"'),
        (r'q="C:\\temp"', "C:\\temp"),
        (r'q="line1\nline2"', "line1\nline2"),
        ('q="a,b"', "a,b"),
        ('q="}{"', "}{"),
        ('q="a = b != c"', "a = b != c"),
        ('q=""', ""),
        ('q="  padded  "', "  padded  "),
        ('q="héllo ✓"', "héllo ✓"),
    ],
)
def test_quoted_values_and_escapes(text: str, value: str) -> None:
    """Double-quoted values unescape \\" \\\\ \\n and keep everything else literally."""
    assert m(text).value == value


def test_comma_and_brace_inside_quotes_do_not_split() -> None:
    """Commas and `}` inside quotes belong to the value, not to the list."""
    parsed = parse_matchers('{a="x,}", b="y"}')
    assert [(x.name, x.value) for x in parsed] == [("a", "x,}"), ("b", "y")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("foo=bar", Matcher("foo", MatchType.EQ, "bar")),
        ("foo!=bar", Matcher("foo", MatchType.NE, "bar")),
        ("foo=~bar.*", Matcher("foo", MatchType.RE, "bar.*")),
        ("foo!~bar.*", Matcher("foo", MatchType.NRE, "bar.*")),
        ("foo = héllo", Matcher("foo", MatchType.EQ, "héllo")),
    ],
)
def test_unquoted_values(text: str, expected: Matcher) -> None:
    """Unquoted values are accepted as Alertmanager does (`foo=bar`)."""
    assert m(text) == expected


# --- list syntax ---------------------------------------------------------------------------

EXPECTED = (Matcher("a", MatchType.EQ, "b"), Matcher("c", MatchType.RE, "d|e"))


@pytest.mark.parametrize(
    "text",
    [
        '{a="b", c=~"d|e"}',
        'a="b",c=~"d|e"',
        '{a="b",c=~"d|e",}',
        'a="b", c=~"d|e",',
        '  {  a  =  "b"  ,\n\tc  =~  "d|e"  ,  }  ',
        "{a=b, c=~d|e}",
    ],
)
def test_braces_whitespace_and_trailing_comma_are_optional(text: str) -> None:
    """Braces, whitespace between tokens and one trailing comma do not change the result."""
    assert parse_matchers(text) == EXPECTED


@pytest.mark.parametrize("text", ["{}", "", "   ", " { } "])
def test_empty_input_gives_no_matchers(text: str) -> None:
    """An empty list parses to an empty tuple."""
    assert parse_matchers(text) == ()


def test_empty_selector_matches_everything() -> None:
    """No matchers means no constraint."""
    assert LabelSelector.from_config("{}").matches({"anything": "at all"})


def test_selector_requires_all_matchers() -> None:
    """LabelSelector.matches is a logical AND of its matchers."""
    selector = LabelSelector.from_config('{alertname="X", severity=~"P0|P1"}')
    assert selector.matches({"alertname": "X", "severity": "P1", "extra": "ok"})
    assert not selector.matches({"alertname": "X", "severity": "P2"})
    assert not selector.matches({"alertname": "Y", "severity": "P1"})


def test_list_form_equals_string_form() -> None:
    """A route-style list of matcher strings is the same selector as one string."""
    as_string = LabelSelector.from_config('{alertname="X", severity=~"P0|P1"}')
    as_list = LabelSelector.from_config(['alertname="X"', 'severity=~"P0|P1"'])
    assert as_list == as_string


def test_list_items_may_hold_several_matchers() -> None:
    """Like Alertmanager's `matchers:`, each list item is itself a matcher list."""
    selector = LabelSelector.from_config(['{a="b", c="d"}', "e=f"])
    assert [x.name for x in selector.matchers] == ["a", "c", "e"]


def test_list_form_error_names_the_bad_item() -> None:
    """A syntax error in a list item reports that item's text."""
    with pytest.raises(MatcherSyntaxError) as info:
        LabelSelector.from_config(['a="b"', 'c=="d"'])
    assert info.value.text == 'c=="d"'


# --- rendering and round trip --------------------------------------------------------------


def test_str_quotes_and_escapes_the_value() -> None:
    """str(Matcher) renders name, operator and the value quoted and escaped."""
    assert str(Matcher("name", MatchType.EQ, 'va"lue')) == r'name="va\"lue"'
    assert str(Matcher("p", MatchType.NRE, "a\\b\nc")) == r'p!~"a\\b\nc"'


def test_selector_str() -> None:
    """str(LabelSelector) renders `{a="b", c=~"d"}`."""
    assert str(LabelSelector.from_config("a=b,c=~d")) == '{a="b", c=~"d"}'


@pytest.mark.parametrize(
    "matcher",
    [
        Matcher("a", MatchType.EQ, ""),
        Matcher("a", MatchType.NE, 'quote " inside'),
        Matcher("a", MatchType.RE, "back\\slash|\\d+"),
        Matcher("a", MatchType.NRE, "new\nline"),
        Matcher("_x:y", MatchType.EQ, "commas, braces {} and = signs"),
        Matcher("a", MatchType.EQ, '\\\\"\\n'),
    ],
)
def test_round_trip(matcher: Matcher) -> None:
    """parse_matchers(str(m)) gives back m, whatever the value holds."""
    assert parse_matchers(str(matcher)) == (matcher,)
    assert parse_matcher(str(matcher)) == matcher


def test_selector_round_trip() -> None:
    """A selector's string form parses back to the same selector."""
    selector = LabelSelector.from_config(['a="x,}"', 'b=~"(?i)p0|p1"', 'c!="\\"q\\""'])
    assert LabelSelector.from_config(str(selector)) == selector


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('job="value', "unterminated quoted value from offset 4"),
        ('job="value\\"', "unterminated quoted value from offset 4"),
        ('job"x"', "expected an operator ('=', '!=', '=~' or '!~') at offset 3, found '\"'"),
        ("job", "expected an operator ('=', '!=', '=~' or '!~') at offset 3, found end of input"),
        ("a!b", "expected an operator ('=', '!=', '=~' or '!~') at offset 1, found '!'"),
        ('1job="x"', "invalid label name '1job' at offset 0"),
        ('{ok="1", name-with-dashes="x"}', "invalid label name 'name-with-dashes' at offset 9"),
        ('"job"="x"', "expected a label name at offset 0, found '\"'"),
        ('job=~"invalid[regexp"', "invalid regular expression 'invalid[regexp': missing ]"),
        ('job="a" x', "expected ',' or end of input at offset 8, found 'x'"),
        ("job=a b", "expected ',' or end of input at offset 6, found 'b'"),
        ('job=value"', "expected ',' or end of input at offset 9, found '\"'"),
        ("job=", 'expected a label value (write "" for the empty string) at offset 4'),
        ("a==b", "expected a label value (write \"\" for the empty string) at offset 2, found '='"),
        (
            "x=~~~",
            "expected a label value (write \"\" for the empty string) at offset 3, found '~'",
        ),
        ("job=bar\\", "expected ',' or end of input at offset 7, found '\\\\'"),
        ('job="\\d+"', "unsupported escape '\\d' at offset 5"),
        ('job="a\nb"', "line break inside quotes at offset 6"),
        ('{job="a"', "expected ',' or '}' at offset 8, found end of input"),
        ("{", "expected a label name or '}' at offset 1, found end of input"),
        ('job="a"}', "unexpected '}' at offset 7: there is no opening '{'"),
        ('{job="a"} x', "expected end of input at offset 10, found 'x'"),
        ("{,}", "expected a label name at offset 1, found ','"),
        ('a="b",,', "expected a label name at offset 6, found ','"),
    ],
)
def test_syntax_errors_explain_what_and_where(text: str, reason: str) -> None:
    """Bad input raises MatcherSyntaxError naming what was expected and the offset."""
    with pytest.raises(MatcherSyntaxError) as info:
        parse_matchers(text)
    assert reason in info.value.reason
    assert info.value.text == text


def test_parse_matcher_refuses_more_than_one() -> None:
    """parse_matcher is for exactly one matcher."""
    with pytest.raises(MatcherSyntaxError, match="expected end of input after a single matcher"):
        parse_matcher('a="b", c="d"')


def test_parse_matcher_refuses_braces() -> None:
    """parse_matcher takes a bare matcher, as Alertmanager's single-matcher parsers do."""
    with pytest.raises(MatcherSyntaxError, match="expected a label name at offset 0"):
        parse_matcher('{a="b"}')


def test_matcher_syntax_error_is_a_config_error() -> None:
    """Callers loading config can catch ConfigError for matcher mistakes too."""
    from healer.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_matchers("not a matcher")


# --- RE2: Alertmanager's engine, linear time -----------------------------------------------

# Patterns that make a backtracking engine (Python's re) take exponential or polynomial
# time on the subject beside them; RE2 runs each in time linear in the subject.
_BIG = 256 * 1024
PATHOLOGICAL = [
    (".*Disk.*Full.*", "Disk" + "x" * _BIG),  # the case: no "Full" anywhere
    ("(a+)+$", "a" * _BIG + "!"),
    ("(a|a)*b", "a" * _BIG),
    ("(a*)*b", "a" * _BIG),
    ("(x+x+)+y", "x" * _BIG),
    ("(.*a){12}", "a" * _BIG + "b"),
    ("(\\\\w+\\\\s?)+$", "word " * (_BIG // 5) + "!"),
    ("(a|aa)+c", "a" * _BIG),
    ("((a+)*)+b", "a" * _BIG),
]


def test_regexes_run_on_re2() -> None:
    """The compiled pattern is google-re2's, the engine Alertmanager's Go regexp mirrors."""
    import re2

    matcher = m('alertname=~".*Disk.*Full.*"')
    assert type(matcher.regex).__module__.startswith("re2")
    assert isinstance(matcher.regex, re2._Regexp)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("pattern", "subject"), PATHOLOGICAL, ids=[p for p, _ in PATHOLOGICAL])
def test_backtracking_patterns_finish_on_a_256k_value(pattern: str, subject: str) -> None:
    """Each classic backtracking pattern against a 256 KiB value finishes with the right
    answer, many times over. Python's re would run for hours on any one of them; RE2 is
    linear in the input, so the test's timeout is a bound no backtracking engine meets
    (no wall-clock assertion: the machine is shared)."""
    matcher = m(f'x=~"{pattern}"')
    for _ in range(20):
        assert not matcher.matches({"x": subject})


@pytest.mark.parametrize(
    "value",
    [
        "(a)\\\\1",  # backreference
        "(?=a)a",  # lookahead
        "(?!a)b",  # negative lookahead
        "(?<=a)b",  # lookbehind
        "(?<!a)b",  # negative lookbehind
        "a++",  # possessive quantifier
        "(?>a)",  # atomic group
        "\\\\C",  # any byte: C++ RE2 has it, Go does not
        "\\\\Z",  # Python's end anchor: Go has only \z
        "a{1001}",  # over Go's repetition limit
        "(?P=n)",  # named backreference
        "(?x)a b",  # verbose flag: Go has only i, m, s, U
    ],
)
def test_patterns_go_refuses_are_refused(value: str) -> None:
    """Every construct Go's RE2 syntax lacks is a config error, not a silent
    mismatch with Alertmanager."""
    with pytest.raises(MatcherSyntaxError, match="invalid regular expression"):
        parse_matcher(f'x=~"{value}"')


@pytest.mark.parametrize(
    ("value", "yes", "no"),
    [
        ("[[:alpha:]]+", "abc", "ab1"),  # POSIX class (Python's re misreads it)
        ("\\\\pL+", "\u00e9t\u00e9", "e1"),  # Unicode class
        ("\\\\Qa.b\\\\E", "a.b", "axb"),  # quoted literal
        ("(?i)disk", "DISK", "disc"),
        ("(?s)a.b", "a\nb", "ab"),
        ("(?U)a+", "aaa", "b"),
        ("(?P<n>ab)+", "abab", "aba"),
        ("a\\\\z", "a", "a\n"),
        ("\\\\d+", "42", "\u0664\u0662"),  # ASCII \d
        ("a.c", "a\u00e9c", "a\nc"),  # . is one code point, never a newline
    ],
)
def test_go_re2_syntax_is_accepted_with_its_meaning(value: str, yes: str, no: str) -> None:
    """What Go's RE2 accepts is accepted here and matches as it does in Alertmanager."""
    matcher = parse_matcher(f'x=~"{value}"')
    assert matcher.matches({"x": yes})
    assert not matcher.matches({"x": no})


def test_a_lone_surrogate_in_a_value_is_matched_as_go_would() -> None:
    """A lone surrogate (JSON "\\ud800", not encodable as UTF-8) is matched as one U+FFFD,
    as Alertmanager's Go JSON decoder reads it, never an error."""
    assert m('x=~"a.b"').matches({"x": "a\ud800b"})
    assert m('x=~"a\ufffdb"').matches({"x": "a\udfffb"})
    assert not m('x=~"ab"').matches({"x": "a\ud800b"})
