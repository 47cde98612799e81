"""The benchmarks that need no Docker run end to end in their smoke mode (``--quick``),
so that ./scripts/bench does not rot between full runs: each writes its JSON with every
target measured. Figures are not judged here (a test never asserts a wall-clock time);
./scripts/bench writes the real ones into docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.env import require_service

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.load


def _bench(results: Path, *names: str) -> subprocess.CompletedProcess[str]:
    """`python -m bench NAME... --quick`, its JSON into ``results``."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *names, "--quick", "--results", str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.timeout(240)
def test_ingest_and_dispatch_benchmarks_run_and_measure_every_target(tmp_path: Path) -> None:
    """`python -m bench ingest dispatch --quick` exits 0, writes one JSON per benchmark
    with the machine, a table and every target measured, each ratio target with its
    spread over 3 runs; no webhook post failed."""
    if shutil.which("wrk") is None:
        require_service("wrk", "wrk not found (apt-get install wrk; scripts/test does)")
    proc = _bench(tmp_path, "ingest", "dispatch")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("ingest", "dispatch"):
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        assert doc["quick"] is True and doc["machine"]["cores"] >= 1
        assert doc["table"], doc
        assert all(t["value"] is not None for t in doc["targets"]), doc["targets"]
        assert all(t["met"] in (True, False) for t in doc["targets"]), doc["targets"]
        ratios = [t for t in doc["targets"] if " / " in t["figure"]]
        assert ratios and all(t["spread"]["n"] == 3 for t in ratios), ratios
        assert doc["runs"] == 3
    ingest = json.loads((tmp_path / "ingest.json").read_text())
    failed = [t for t in ingest["targets"] if t["figure"].startswith("failed requests")]
    assert failed and all(t["value"] == 0 for t in failed), failed
    assert "| ingest |" in proc.stdout and "| dispatch |" in proc.stdout


@pytest.mark.postgres
@pytest.mark.prometheus
@pytest.mark.timeout(240)
def test_storm_replicas_benchmark_runs_and_keeps_exactly_once(tmp_path: Path) -> None:
    """`python -m bench storm_replicas --quick` (3 replicas on a private PostgreSQL beside
    1 healer on SQLite) exits 0 and writes its JSON with every target measured; on both
    sides one heal per fingerprint, none healed twice, nothing accepted lost, no non-2xx.
    The alerts/s ratio is only reported, never judged here."""
    from tests.support.servers.pgserver import pg_bin

    if pg_bin() is None:
        require_service("PostgreSQL binaries", "no /usr/lib/postgresql/*/bin/initdb")
    if shutil.which("prometheus") is None:
        require_service("prometheus", "prometheus not found (apt-get install prometheus)")
    proc = _bench(tmp_path, "storm_replicas")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "storm_replicas.json").read_text())
    assert doc["quick"] is True and doc["table"], doc
    assert all(t["value"] is not None for t in doc["targets"]), doc["targets"]
    exactly_once = [t for t in doc["targets"] if not t["figure"].startswith("alerts/s")]
    assert len(exactly_once) == 8 and all(t["value"] == 0 for t in exactly_once), exactly_once
    summary = doc["figures"]["summary"]
    fps = doc["figures"]["fingerprints"]
    assert all(summary[side]["heals_created"] == [fps] for side in ("pg", "sqlite")), summary
    assert "| storm_replicas |" in proc.stdout


@pytest.mark.timeout(240)
def test_retention_benchmark_runs_and_measures_every_target(tmp_path: Path) -> None:
    """`python -m bench retention --quick` (a 4 s window, the pruning and the keeping
    healer taking turns) exits 0 and writes its JSON with every target measured, sizes and rates for
    both runs, and no failed post. The ratios are only reported, never judged here."""
    if shutil.which("wrk") is None:
        require_service("wrk", "wrk not found (apt-get install wrk; scripts/test does)")
    proc = _bench(tmp_path, "retention")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "retention.json").read_text())
    assert doc["quick"] is True and doc["table"]
    assert all(t["value"] is not None for t in doc["targets"]), doc["targets"]
    figures = doc["figures"]
    assert set(figures["steady_alerts_per_s"]) == {"with", "without"}
    assert all(n > 0 for n in figures["journal_bytes_at_end"].values())
    assert figures["errors"] == 0
    assert "| retention |" in proc.stdout
