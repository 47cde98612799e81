"""The whole-loop picture: one heal per Odoo scenario, its phases as stacked bars from
the fault, coloured by who owns them (Prometheus, Alertmanager, healer).

    python -m bench.timeline [bench/results/loop.json] [OUT.png: default timeline.png beside it]

``bench/loop.py`` calls :func:`render` at the end of its run; ``bench/report.py`` links the
PNG from docs/benchmarks.md under the summary table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS

# Owner -> phase -> colour: warm for Prometheus, purple for Alertmanager, blues for
# healer, grey for the service, a pale hatched blue for healer's deliberate hold.
STYLE: dict[str, dict[str, Any]] = {
    "detect": {"color": "#d95f0e"},
    "for": {"color": "#fdae6b"},
    "notify": {"color": "#756bb1"},
    "check": {"color": "#08306b"},
    "act": {"color": "#2171b5"},
    "recover": {"color": "#bdbdbd"},
    "poll": {"color": "#6baed6"},
    "stable_for": {"color": "#deebf7", "hatch": "///", "edgecolor": "#6baed6"},
}
LABELS = {
    "detect": "Prometheus: detect (scrape, threshold, evaluation)",
    "for": "Prometheus: the rule's for:",
    "notify": "Alertmanager: notify (group_wait, POST)",
    "check": "healer: check",
    "act": "healer: act",
    "recover": "service recovers, Prometheus clears the alert",
    "poll": "healer: verify polling lag",
    "stable_for": "healer: stable_for hold",
}
ORDER = ("detect", "for", "notify", "check", "act", "recover", "poll", "stable_for")
LEGEND = ("detect", "for", "notify", "check", "act", "poll", "stable_for", "recover")
"""Legend order: filled column by column, so the columns read Prometheus and
Alertmanager, healer at work, healer's hold and the service."""


def _load(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    doc: dict[str, Any] = json.loads(Path(source).read_text())
    return doc


def _chosen_run(scenario: dict[str, Any]) -> dict[str, Any] | None:
    rep = scenario.get("timeline_rep")
    for run in scenario.get("runs", []):
        if run.get("rep") == rep and run.get("phases"):
            return dict(run)
    return None


def _fmt(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def render(source: str | Path | dict[str, Any], out_png: str | Path) -> Path:
    """Draw the picture of a loop result (a ``loop.json`` path or its parsed document)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    doc = _load(source)
    scenarios = list(doc["figures"]["scenarios"].values())
    rows = [(s, _chosen_run(s)) for s in scenarios]
    height = 1.6 + 1.05 * len(rows)
    fig = Figure(figsize=(12, height), dpi=110)
    ax = fig.add_subplot()
    longest = max(
        (sum(v for v in run["phases"].values() if v) for _, run in rows if run), default=10.0
    )
    for y, (_, run) in enumerate(rows):
        if run is None:
            ax.text(0.1, y, "no recovered heal in this run", va="center", color="#b30000")
            continue
        left = 0.0
        for name in ORDER:
            width = run["phases"].get(name) or 0.0
            style = STYLE[name]
            ax.barh(
                y,
                width,
                left=left,
                height=0.55,
                color=style["color"],
                hatch=style.get("hatch"),
                edgecolor=style.get("edgecolor", "white"),
                linewidth=0.6,
            )
            if width >= 0.06 * longest:
                dark = name in ("detect", "notify", "check", "act")
                ax.text(
                    left + width / 2,
                    y,
                    _fmt(width),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "#222222",
                )
            left += width
        ax.text(
            left + 0.012 * longest,
            y,
            f"recovered at {_fmt(left)}",
            va="center",
            fontsize=8.5,
            color="#222222",
        )
        owned = run["owned"]
        p = run["phases"]
        healer_parts = ", ".join(
            f"{n} {p[n]:.2f}" for n in ("check", "act", "poll") if p.get(n) is not None
        )
        ax.text(
            0,
            y + 0.44,
            f"Prometheus {owned['Prometheus']:.2f} s + Alertmanager "
            f"{owned['Alertmanager']:.2f} s  |  healer {owned['healer']:.2f} s "
            f"({healer_parts})  |  service {owned['service']:.2f} s  |  "
            f"stable_for hold {owned['healer hold']:.2f} s",
            va="center",
            fontsize=7.5,
            color="#444444",
        )
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(
        [f"{s['title']}\n{s['alert']}\n-> {s['handler']}" for s in scenarios], fontsize=8.5
    )
    ax.set_ylim(len(rows) - 0.3, -0.5)
    ax.set_xlim(0, longest * 1.17)
    ax.set_xlabel("seconds after the fault")
    ax.grid(axis="x", color="#e0e0e0", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [
        Patch(
            facecolor=STYLE[n]["color"],
            hatch=STYLE[n].get("hatch"),
            edgecolor=STYLE[n].get("edgecolor", "white"),
            label=LABELS[n],
        )
        for n in LEGEND
    ]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.5 / height * 2.2),
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    params = doc.get("params", {})
    machine = doc.get("machine", {})
    reps = params.get("repetitions")
    fig.suptitle(
        "One whole-loop heal per Odoo scenario: fault -> Prometheus -> Alertmanager "
        "-> healer -> verified recovered",
        fontsize=11,
        x=0.01,
        ha="left",
    )
    note = (
        f"each row: the repetition (of {reps}) with the median fault -> recovered time; "
        "alert rules at test speed (1 s scrape/evaluation, for: 1-2 s)"
    )
    if machine:
        note += f"; {machine.get('cores')} cores, commit {machine.get('commit')}"
    if doc.get("quick"):
        note += "; QUICK smoke run"
    fig.text(0.01, 1 - 0.4 / height, note, fontsize=8, color="#555555", ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / height))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0]) if args else RESULTS / "loop.json"
    out = Path(args[1]) if len(args) > 1 else source.parent / "timeline.png"
    print(render(source, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
