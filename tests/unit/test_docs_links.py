"""The documentation stands alone: every relative link in README.md, CHANGELOG.md and
docs/ reaches a file of this repository (and a heading of it, for an #anchor), and no
tracked file points at the workspace outside the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.support.inprocess.markdown import anchors, links, slug

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [REPO / "README.md", REPO / "CHANGELOG.md", *(REPO / "docs").rglob("*.md")],
    key=lambda p: str(p),
)
# Built so that this file does not contain what it looks for.
OUTSIDE = ("../" + "shared", "shared/" + "SPEC")


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """The relative links of ``page`` that reach no file under ``root``, or no heading of
    one."""
    broken = []
    for target in links(page):
        if "://" in target or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no {dest}")
        elif not dest.is_relative_to(root):
            broken.append(f"{target}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: {dest.name} has no heading #{anchor}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    """Each relative link and image of the page names an existing file or folder of the
    repository, and each #anchor on a Markdown page names one of its headings."""
    assert page.is_file()
    assert broken_links(page) == []


def test_the_pages_the_readme_promises_exist_and_are_linked() -> None:
    """README.md links every page under docs/ (directly or through docs/runbooks/), so
    no page is orphaned, and the split pages exist."""
    readme_links = {t.partition("#")[0] for t in links(REPO / "README.md")}
    for name in (
        "configuration",
        "handlers",
        "writing-handlers",
        "safety",
        "security",
        "operations",
        "odoo",
        "benchmarks",
        "testing",
        "replicas",
    ):
        assert (REPO / "docs" / f"{name}.md").is_file(), name
        assert f"docs/{name}.md" in readme_links, f"README.md does not link docs/{name}.md"
    assert "docs/runbooks/" in readme_links
    assert "CHANGELOG.md" in readme_links


def test_broken_links_and_anchors_are_caught(tmp_path: Path) -> None:
    """The checker itself: a missing file, a missing heading and a link outside the
    repository are each reported; links in code blocks, code spans and URLs are not."""
    (tmp_path / "other.md").write_text("# Other page\n\n## `odoo.unlock_cron`: the Jam\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n\n[ok](other.md#odoounlock_cron-the-jam) [self](#top) [web](https://x.y/z)\n"
        "[gone](missing.md) [bad](other.md#nowhere) `[code](nope.md)`\n"
        "```\n[fenced](nope.md)\n# not a heading\n```\n"
    )
    found = broken_links(page, root=tmp_path)
    assert [f.split(":")[0] for f in found] == ["missing.md", "other.md#nowhere"]
    (tmp_path / "docs").mkdir()
    escape = tmp_path / "docs" / "escape.md"
    escape.write_text("[up](../other.md)\n")
    assert broken_links(escape, root=tmp_path) == []
    assert broken_links(escape, root=tmp_path / "docs") == ["../other.md: outside the repository"]
    assert slug("`exec` and `files.prune`") == "exec-and-filesprune"
    assert slug("Alerts about healer itself") == "alerts-about-healer-itself"


def test_no_tracked_file_points_outside_the_repository() -> None:
    """No file tracked by git names the workspace's shared folder or its spec: the
    repository must be readable and buildable on its own."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    offenders = []
    for name in filter(None, listed):
        path = REPO / name.decode()
        if not path.is_file():
            continue
        data = path.read_bytes()
        offenders += [f"{name.decode()}: {s}" for s in OUTSIDE if s.encode() in data]
    assert offenders == []
