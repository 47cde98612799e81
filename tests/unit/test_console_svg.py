"""The verify-sample chart (healer/console/svg.py): an inline SVG for no sample, one and
many; what each sample plots (its largest finite value, else its series count, nothing
for an unanswered query or values that are not numbers); text inside is escaped. Also:
the console's templates and static files are package data, so a wheel ships them."""

from __future__ import annotations

import fnmatch
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from healer.console.svg import sample_value, verify_chart

REPO = Path(__file__).resolve().parents[2]
NS = "{http://www.w3.org/2000/svg}"


def _sample(at: float, **data: Any) -> dict[str, Any]:
    return {"at": at, "kind": "verify_sample", "data": data}


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # well-formed XML, or this raises


def test_no_samples_is_an_empty_chart_saying_so() -> None:
    """No sample: a valid SVG with no point, saying there is none."""
    svg = _parse(verify_chart([]))
    assert svg.tag == f"{NS}svg"
    assert svg.findall(f".//{NS}circle") == []
    assert "no verify samples" in "".join(svg.itertext())


def test_one_sample_is_one_point_without_a_line() -> None:
    """One sample: one point, centred, and no line."""
    svg = _parse(verify_chart([_sample(10.0, healthy=False, series=1)]))
    [point] = svg.findall(f".//{NS}circle")
    assert point.get("class") == "sample unhealthy"
    assert point.get("cx") == "300.0"
    assert svg.findall(f".//{NS}polyline") == []


def test_many_samples_are_points_on_a_line_left_to_right() -> None:
    """Many samples: a point each, in time order left to right, joined by a line; the
    unhealthy ones (series 1) above the healthy ones (series 0)."""
    samples = [
        _sample(0.0, healthy=False, series=1),
        _sample(1.0, healthy=False, series=1),
        _sample(2.0, healthy=True, series=0),
        _sample(3.0, healthy=True, series=0),
    ]
    svg = _parse(verify_chart(samples))
    points = svg.findall(f".//{NS}circle")
    assert [p.get("class") for p in points] == ["sample unhealthy"] * 2 + ["sample healthy"] * 2
    xs = [float(p.get("cx") or 0) for p in points]
    ys = [float(p.get("cy") or 0) for p in points]
    assert xs == sorted(xs) and len(set(xs)) == 4
    assert ys[0] < ys[2]  # SVG y grows downwards: 1 is drawn above 0
    [line] = svg.findall(f".//{NS}polyline")
    assert len((line.get("points") or "").split()) == 4


def test_non_numeric_values_and_unanswered_queries_plot_no_value() -> None:
    """Values that are not finite numbers fall back to the series count; a sample
    Prometheus did not answer (healthy None) plots no value and is drawn on the axis in
    the "unknown" colour, its error escaped in its tooltip."""
    assert sample_value({"healthy": False, "values": [3.5, 7, "x"], "series": 2}) == 7.0
    assert sample_value({"healthy": False, "values": ["NaN", None, True], "series": 2}) == 2.0
    assert sample_value({"healthy": False, "values": [float("nan")], "series": "2"}) is None
    assert sample_value({"healthy": None, "series": 0, "error": "refused"}) is None
    markup = verify_chart(
        [
            _sample(0.0, healthy=None, series=0, error="<b>refused</b>"),
            _sample(1.0, healthy=False, values=["abc"], series="x"),
        ]
    )
    assert "<b>" not in markup and "&lt;b&gt;refused&lt;/b&gt;" in markup
    svg = _parse(markup)
    points = svg.findall(f".//{NS}circle")
    assert [p.get("class") for p in points] == ["sample unknown", "sample unhealthy"]
    assert {p.get("cy") for p in points} == {"136.0"}  # both on the axis
    assert svg.findall(f".//{NS}polyline") == []


def test_templates_and_static_files_are_package_data() -> None:
    """Every file under healer/console/templates and static matches a
    [tool.setuptools.package-data] pattern of healer.console, so a wheel ships them."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["healer.console"]
    console = REPO / "healer" / "console"
    files = [
        p.relative_to(console).as_posix()
        for folder in ("templates", "static")
        for p in (console / folder).rglob("*")
        if p.is_file()
    ]
    assert files
    for name in files:
        assert any(fnmatch.fnmatch(name, pat) for pat in patterns), name


def test_templates_have_no_inline_script_or_style() -> None:
    """The CSP forbids inline script and style: no template holds a <script> body, an
    on* handler or a style attribute."""
    for template in (REPO / "healer" / "console" / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"\son[a-z]+=", text), template.name
        assert not re.search(r"\sstyle=|<style", text), template.name
