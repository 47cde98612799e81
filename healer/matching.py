r"""Alertmanager label matchers: parse ``severity=~"P0|P1"`` and test alert labels with it.

Usage::

    from healer.matching import LabelSelector, parse_matcher, parse_matchers

    sel = LabelSelector.from_config('{alertname="DiskFull", severity=~"P0|P1"}')
    sel.matches({"alertname": "DiskFull", "severity": "P1"})  # True
    LabelSelector.from_config(['alertname="DiskFull"', 'severity=~"P0|P1"']) == sel  # True
    parse_matcher('team!="db"').matches({})  # True: a missing label is ""
    parse_matchers('a="b", c!~"x",')  # (Matcher a="b", Matcher c!~"x")
    str(sel)  # '{alertname="DiskFull", severity=~"P0|P1"}'

The syntax is what Alertmanager's classic (``pkg/labels``, v0.25) and UTF-8 (``matcher/parse``)
parsers read alike: optional ``{}``; comma-separated matchers, a trailing comma allowed;
whitespace between tokens; names ``[a-zA-Z_:][a-zA-Z0-9_:]*``; values double-quoted (escapes
``\"`` ``\\`` ``\n``) or unquoted (``foo=bar``); regexes anchored whole (``=~"P0|P1"`` is
``^(?:P0|P1)$``). Inputs they disagree on (``foo=bar baz``, ``"\d"``, ``job=``, a lone brace)
raise ``MatcherSyntaxError`` saying what was expected at which 0-based character offset.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, Self

import re2

from healer.errors import MatcherSyntaxError

__all__ = ["LabelSelector", "MatchType", "Matcher", "parse_matcher", "parse_matchers"]

_LABEL_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# Only what both parsers skip: the classic one uses RE2's \s, which has no \v or Unicode
# spaces. Those still end an unquoted word, as in the UTF-8 parser.
_BLANKS = " \t\n\r\f"
_RESERVED = "{}!=~,\\\"'`"
_ESCAPES = {"\\n": "\n", '\\"': '"', "\\\\": "\\"}


class MatchType(enum.StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is reported as a config error, not on stderr
    return options


_OPTIONS = _re2_options()
# C++ RE2 accepts \C (any byte) where Go's regexp refuses it; outside a class, after an
# even run of backslashes (an escaped backslash followed by C is a literal "\C").
_ANY_BYTE = re.compile(r"(?<!\\)(?:\\\\)*\\C")
_SURROGATE = re.compile("[\ud800-\udfff]")


class Pattern(Protocol):
    """A compiled RE2 pattern (google-re2 ships no type information)."""

    def search(self, text: str) -> object | None: ...


def _search(pattern: Pattern, text: str) -> bool:
    try:
        return pattern.search(text) is not None
    except UnicodeEncodeError:
        # A lone surrogate (from a JSON "\\ud800") cannot be UTF-8; Go's JSON decoder
        # reads it as U+FFFD, so that is what Alertmanager matched.
        return pattern.search(_SURROGATE.sub("\ufffd", text)) is not None


def _compile(value: str) -> Pattern:
    r"""Compile ``value`` the way Alertmanager does: ``^(?:value)$`` with Go's RE2.

    google-re2 is the same engine (linear time in the input, no backtracking) with the
    same Perl-like syntax: no backreferences or lookaround, ASCII ``\d \w \s \b``,
    ``$`` only at the end of the text, POSIX classes such as ``[[:alpha:]]``.
    """
    if _ANY_BYTE.search(value):
        raise ValueError(f"invalid regular expression {value!r}: invalid escape sequence: \\C")
    try:
        pattern: Pattern = re2.compile(f"^(?:{value})$", _OPTIONS)
        return pattern
    except re2.error as exc:
        reason = _reason(exc)
    try:  # the bare value usually explains better, quoting the user's own text
        re2.compile(value, _OPTIONS)
    except re2.error as exc:
        reason = _reason(exc)
    raise ValueError(f"invalid regular expression {value!r}: {reason}")


def _reason(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else exc
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One ``name op value`` test; ``regex`` is compiled at construction for ``=~``/``!~``."""

    name: str
    type: MatchType
    value: str
    regex: Pattern | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _LABEL_NAME.fullmatch(self.name):
            raise MatcherSyntaxError(str(self), f"invalid label name {self.name!r}")
        regex = None
        if self.type in (MatchType.RE, MatchType.NRE):
            try:
                regex = _compile(self.value)
            except ValueError as exc:
                raise MatcherSyntaxError(str(self), str(exc)) from None
        object.__setattr__(self, "regex", regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` pass this test; a missing label counts as ``""``."""
        actual = labels.get(self.name, "")
        # search, not fullmatch: the anchors are in the pattern, exactly as in Go, where
        # =~"a)|(b" becomes ^(?:a)|(b)$ and so matches anything starting with "a".
        hit = actual == self.value if self.regex is None else _search(self.regex, actual)
        return hit if self.type in (MatchType.EQ, MatchType.RE) else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        return f'{self.name}{self.type}"{escaped}"'


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """All of ``matchers`` must match (an empty selector matches everything)."""

    matchers: tuple[Matcher, ...] = ()

    @classmethod
    def from_config(cls, value: str | list[str]) -> Self:
        """From ``'{a="b", c=~"d"}'`` or, like a route's ``matchers:``, ``['a="b"', ...]``."""
        items = [value] if isinstance(value, str) else value
        return cls(tuple(m for item in items for m in parse_matchers(item)))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def __str__(self) -> str:
        return "{" + ", ".join(map(str, self.matchers)) + "}"


def parse_matcher(text: str) -> Matcher:
    """Parse exactly one matcher, without braces: ``severity=~"P0|P1"``."""
    parser = _Parser(text)
    matcher = parser.matcher()
    parser.skip_blanks()
    if parser.peek():
        parser.fail("end of input after a single matcher")
    return matcher


def parse_matchers(text: str) -> tuple[Matcher, ...]:
    """Parse ``{a="b", c=~"d|e"}``, ``a="b",c!~"x"``, ``{}`` or ``""``."""
    return _Parser(text).matchers()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, reason: str) -> MatcherSyntaxError:
        return MatcherSyntaxError(self.text, reason)

    def fail(self, expected: str) -> NoReturn:
        found = repr(self.peek()) if self.peek() else "end of input"
        raise self.error(f"expected {expected} at offset {self.pos}, found {found}")

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip_blanks(self) -> None:
        while self.peek() and self.peek() in _BLANKS:
            self.pos += 1

    def word(self) -> str:
        start = self.pos
        while self.peek() and not (self.peek().isspace() or self.peek() in _RESERVED):
            self.pos += 1
        return self.text[start : self.pos]

    def matchers(self) -> tuple[Matcher, ...]:
        self.skip_blanks()
        braced = self.peek() == "{"
        self.pos += braced
        found: list[Matcher] = []
        self.skip_blanks()
        while self.peek() not in ("", "}"):
            found.append(self.matcher())
            self.skip_blanks()
            if self.peek() != ",":
                break
            self.pos += 1
            self.skip_blanks()
        if braced and self.peek() != "}":
            self.fail("',' or '}'" if found else "a label name or '}'")
        if not braced and self.peek() == "}":
            raise self.error(f"unexpected '}}' at offset {self.pos}: there is no opening '{{'")
        self.pos += braced
        self.skip_blanks()
        if self.peek():
            self.fail("end of input" if braced else "',' or end of input")
        return tuple(found)

    def matcher(self) -> Matcher:
        self.skip_blanks()
        start = self.pos
        if not (name := self.word()):
            self.fail("a label name")
        if not _LABEL_NAME.fullmatch(name):
            pattern = _LABEL_NAME.pattern
            raise self.error(f"invalid label name {name!r} at offset {start}: must match {pattern}")
        self.skip_blanks()
        op = self.operator()
        self.skip_blanks()
        start = self.pos
        value = self.quoted() if self.peek() == '"' else self.word()
        if start == self.pos:
            self.fail('a label value (write "" for the empty string)')
        try:
            return Matcher(name, op, value)
        except MatcherSyntaxError as exc:
            raise self.error(f"{exc.reason} (value at offset {start})") from None

    def operator(self) -> MatchType:
        for op in (MatchType.RE, MatchType.NRE, MatchType.NE, MatchType.EQ):
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        self.fail("an operator ('=', '!=', '=~' or '!~')")

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while (char := self.peek()) != '"':
            if char == "\\":
                char = self.text[self.pos : self.pos + 2]  # the whole escape sequence
            if char in ("", "\\"):
                raise self.error(f"unterminated quoted value from offset {start}: expected '\"'")
            if char == "\n":
                raise self.error(f"line break inside quotes at offset {self.pos}: write it as \\n")
            if char.startswith("\\") and char not in _ESCAPES:
                # The classic parser keeps "\d" as is; the UTF-8 one rejects it.
                raise self.error(
                    f"unsupported escape '{char}' at offset {self.pos}: only \\\", \\\\"
                    ' and \\n are allowed (a regex \\d is written "\\\\d")'
                )
            out.append(_ESCAPES.get(char, char))
            self.pos += len(char)
        self.pos += 1
        return "".join(out)
