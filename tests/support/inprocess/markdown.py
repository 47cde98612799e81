"""Markdown as GitHub reads it, for the tests that check our documentation: heading
anchors (slugs) and relative links, both outside fenced code blocks."""

from __future__ import annotations

import re
from pathlib import Path

_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower-cased, punctuation other than ``-`` and
    ``_`` dropped (backticks and dots included), each space a ``-``."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def prose_lines(markdown: str) -> list[str]:
    """The lines outside fenced code blocks (```/~~~), where headings and links count."""
    lines, fence = [], ""
    for line in markdown.splitlines():
        marker = line.lstrip()[:3]
        if marker in ("```", "~~~"):
            if not fence:
                fence = marker
            elif marker == fence:
                fence = ""
            continue
        if not fence:
            lines.append(line)
    return lines


def anchors(markdown: Path) -> set[str]:
    """Every heading anchor of a page, repeated headings numbered ``-1``, ``-2`` as
    GitHub numbers them."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(markdown.read_text(encoding="utf-8")):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m is None:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(markdown: Path) -> list[str]:
    """Every link and image target of a page, outside code blocks and code spans."""
    targets: list[str] = []
    for line in prose_lines(markdown.read_text(encoding="utf-8")):
        targets += _LINK.findall(_CODE_SPAN.sub("", line))
    return targets
