"""The verify selector built from alert labels, read back by a strict parser of PromQL's
selector grammar: no label set (names and values, hypothesis-generated and hand-picked
injections) can change the selector's shape. It always reads back as ``ALERTS`` with
exactly the alert's own equality matchers, nothing more, nothing less.

The parser is written from PromQL's lexer (``promql/parser/lex.go``), not from
``promql_string``: it accepts only a subset of what Prometheus accepts (no octal or
``\\x`` byte escapes, no raw U+FFFD, which the lexer takes for invalid UTF-8), so what
it reads is what Prometheus reads. tests/integration/test_promql_prometheus.py sends
the same strings to a real Prometheus.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from healer.verify import alerts_query, promql_label_name, promql_string

FUZZ = settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
}
_IDENT = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SPACE = re.compile(r"[ \t\r\n]*")


class SelectorSyntaxError(ValueError):
    pass


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def space(self) -> None:
        self.at = _SPACE.match(self.text, self.at).end()  # type: ignore[union-attr]

    def expect(self, token: str) -> None:
        self.space()
        if not self.text.startswith(token, self.at):
            raise SelectorSyntaxError(f"expected {token!r} at {self.at}: {self.text!r}")
        self.at += len(token)

    def peek(self) -> str:
        self.space()
        return self.text[self.at : self.at + 1]

    def ident(self) -> str:
        self.space()
        found = _IDENT.match(self.text, self.at)
        if found is None:
            raise SelectorSyntaxError(f"expected a name at {self.at}: {self.text!r}")
        self.at = found.end()
        return found.group()

    def string(self) -> str:
        self.expect('"')
        out: list[str] = []
        while True:
            if self.at >= len(self.text):
                raise SelectorSyntaxError("unterminated string")
            char = self.text[self.at]
            self.at += 1
            if char == '"':
                return "".join(out)
            if char in "\n\ufffd":
                raise SelectorSyntaxError(f"raw {char!r} in a string")
            if char != "\\":
                out.append(char)
                continue
            kind = self.text[self.at : self.at + 1]
            self.at += 1
            if kind in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[kind])
            elif kind in ("u", "U"):
                width = 4 if kind == "u" else 8
                digits = self.text[self.at : self.at + width]
                if not re.fullmatch(f"[0-9a-fA-F]{{{width}}}", digits):
                    raise SelectorSyntaxError(f"bad \\{kind} escape")
                code = int(digits, 16)
                if code > 0x10FFFF or 0xD800 <= code < 0xE000:
                    raise SelectorSyntaxError("escape is an invalid code point")
                out.append(chr(code))
                self.at += width
            else:
                raise SelectorSyntaxError(f"escape \\{kind} not accepted here")

    def label_name(self) -> str:
        return self.string() if self.peek() == '"' else self.ident()


def parse_selector(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``metric{name="value", ...}`` -> (metric, [(name, value), ...]); equality matchers
    only, names bare or quoted; anything else raises SelectorSyntaxError."""
    reader = _Reader(text)
    metric = reader.ident()
    reader.expect("{")
    matchers: list[tuple[str, str]] = []
    while reader.peek() != "}":
        if matchers:
            reader.expect(",")
        name = reader.label_name()
        reader.expect("=")
        if reader.peek() in ("=", "~"):
            raise SelectorSyntaxError("only '=' matchers are expected")
        matchers.append((name, reader.string()))
    reader.expect("}")
    reader.space()
    if reader.at != len(text):
        raise SelectorSyntaxError(f"text after the selector: {text[reader.at :]!r}")
    return metric, matchers


def expected_matchers(labels: Mapping[str, str], drop: frozenset[str]) -> list[tuple[str, str]]:
    return [
        ("alertname", labels.get("alertname", "")),
        ("alertstate", "firing"),
        *(
            (n, labels[n])
            for n in sorted(labels)
            if n not in drop and n not in ("alertname", "alertstate")
        ),
    ]


# Hand-picked shapes an attacker would try, mixed with whatever hypothesis generates.
INJECTIONS = st.sampled_from(
    [
        'zz="x"} or vector(0) or ALERTS{q',
        '"} or vector(1) #',
        "a\nb",
        "\\",
        '\\"',
        "\x00",
        "\ufffd",
        "\u2028",
        "é",
        "😀",
        'x=~".*"',
        "}",
        "{",
        ",",
        "__name__",
        "a b",
        "a.b",
        "0abc",
        "abc\n",
        "\\u0022",
        "'",
        "`",
    ]
)
NAMES = st.one_of(st.text(min_size=1, max_size=12), INJECTIONS.filter(bool))
VALUES = st.one_of(st.text(max_size=24), INJECTIONS)
LABELS = st.dictionaries(NAMES, VALUES, max_size=6)


@FUZZ
@given(LABELS, st.frozensets(NAMES, max_size=2))
@example({"alertname": "Disk", 'zz="x"} or vector(0) or ALERTS{q': "1"}, frozenset())
@example({"alertname": 'X"} or vector(0) #', "path": 'C:\\dir"\n'}, frozenset({"path"}))
def test_no_label_set_changes_the_selectors_shape(
    labels: dict[str, str], drop: frozenset[str]
) -> None:
    """For any label names and values, the selector parses back (strict PromQL grammar) to
    ``ALERTS`` with exactly the alert's labels as ``=`` matchers (minus dropped external
    labels and alertstate), in order, with the same names and values."""
    assert parse_selector(alerts_query(labels, drop)) == ("ALERTS", expected_matchers(labels, drop))


@FUZZ
@given(st.text())
def test_promql_string_is_plain_ascii_and_reads_back(value: str) -> None:
    """Every value (NUL, newline, U+FFFD, astral characters, quotes, backslashes) becomes a
    printable-ASCII literal that PromQL's unescaping turns back into the value."""
    quoted = promql_string(value)
    assert quoted.isascii() and quoted.isprintable()
    reader = _Reader(quoted)
    assert reader.string() == value and reader.at == len(quoted)


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ("instance", "instance"),
        ("_x9", "_x9"),
        ("service.name", '"service.name"'),
        ("0abc", '"0abc"'),
        ("abc\n", '"abc\\n"'),
        ("é", '"\\u00e9"'),
        ('zz="x"} or vector(0) or ALERTS{q', '"zz=\\"x\\"} or vector(0) or ALERTS{q"'),
    ],
)
def test_label_names_are_bare_only_when_classic(name: str, written: str) -> None:
    """A name is written bare only when it fits ``[a-zA-Z_][a-zA-Z0-9_]*`` in full (a
    trailing newline does not fit), else quoted: Prometheus 3's form for UTF-8 names."""
    assert promql_label_name(name) == written


def test_the_parser_refuses_what_it_should() -> None:
    """The reference parser is strict: an injected ``or``, a regex matcher, a raw newline
    in a string or a byte escape do not parse (so the property above means something)."""
    for text in (
        'ALERTS{a="x"} or vector(0)',
        'ALERTS{a=~"x"}',
        'ALERTS{a="x\ny"}',
        'ALERTS{a="\\x41"}',
        'ALERTS{a="x"',
        'ALERTS{zz="x"} or vector(0) or ALERTS{q="1"}',
        'ALERTS{"a"="x",}',
    ):
        with pytest.raises(SelectorSyntaxError):
            parse_selector(text)
