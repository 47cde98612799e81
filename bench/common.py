"""What every benchmark shares: result files, statistics, the machine, process memory.

A benchmark module has ``NAME``, ``DESCRIPTION`` and ``run(ctx) -> Result``. The runner
(``bench/__main__.py``) gives it a :class:`Context` (a scratch directory cleaned up
afterwards, ``quick`` for a smoke run, the results directory, ``--runs``) and writes what
it returns with :func:`write_result`: the JSON says which commit (and whether the tree
had changes) and which run (UTC time, how many runs) produced it, each target with
``met`` and the spread of its figure over the runs (:func:`spread`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
QUICK_RESULTS = RESULTS / "quick"
"""Where a smoke run's JSON goes unless ``--results`` says otherwise: never over the full
results."""
# What a run writes itself: not a change of the code being measured.
_OUTPUTS = ("bench/results", "docs/benchmarks.md")


@dataclass(frozen=True)
class Context:
    workdir: Path
    """Scratch space for this benchmark; removed once it returns."""
    quick: bool = False
    """A smoke run: tiny counts, seconds instead of minutes (the tests use it)."""
    results: Path = RESULTS
    """Where this run's results go (a benchmark that draws a picture puts it there too)."""
    runs: int | None = None
    """``--runs``: how many times a benchmark that repeats does so (None: its default)."""

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    def repeats(self, full: int, quick: int = 3) -> int:
        """How many runs to make: ``--runs`` when given, else ``full`` (``quick`` in a smoke
        run); at least 1."""
        return max(1, self.runs if self.runs is not None else self.pick(full, quick))


@dataclass(frozen=True)
class Target:
    """One figure an issue sets a bound on, and whether this run met it; ``spread``: the
    figure's min / median / max over the runs (:func:`spread`), where the bench repeats
    (a ratio target's ``value`` is then that median)."""

    figure: str
    value: float | None
    op: str  # "<=" or ">="
    limit: float
    unit: str = ""
    spread: dict[str, Any] | None = None

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "target": f"{self.op} {self.limit:g}{self.unit}",
            "met": self.met,
        }


@dataclass
class Result:
    name: str
    figures: dict[str, Any]
    """Everything measured, nested as the benchmark likes (JSON-able)."""
    targets: list[Target] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)
    """Rows for the summary: {"figure", "healer", "bare", "ratio"} (strings or numbers)."""
    params: dict[str, Any] = field(default_factory=dict)
    runs: int = 1
    """How many runs the figures (and each target's spread) are over."""


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit, dirty = revision()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": commit,
        "dirty": dirty,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def revision(repo: Path = REPO) -> tuple[str, bool | None]:
    """The short commit of ``repo``'s HEAD, and whether its tree differs from it (what a
    run writes, bench/results and docs/benchmarks.md, left out); ("", None) without git."""
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", "-C", str(repo), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()

        commit = git("rev-parse", "--short", "HEAD")
        status = git("status", "--porcelain", "--", ".", *(f":!{p}" for p in _OUTPUTS))
    except (OSError, subprocess.SubprocessError):
        return "", None
    return commit, bool(status)


def write_result(
    result: Result,
    elapsed: float,
    quick: bool,
    directory: Path = RESULTS,
    host: dict[str, Any] | None = None,
) -> Path:
    """``directory/<name>.json``; ``host``: :func:`machine` as it was when the benchmark
    started (its commit, dirty flag and time), else as it is now."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{result.name}.json"
    doc = {
        "benchmark": result.name,
        "quick": quick,
        "machine": host if host is not None else machine(),
        "elapsed_seconds": round(elapsed, 1),
        "runs": result.runs,
        "params": result.params,
        "targets": [t.as_dict() for t in result.targets],
        "table": result.table,
        "figures": result.figures,
    }
    path.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


# ---- statistics -----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that were measured (None ones left out); None if none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summary(values: Iterable[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """n, median, p90, p99, min, max of ``values`` times ``scale`` (e.g. 1000 for ms)."""
    data = [v * scale for v in values]
    if not data:
        return {"n": 0}

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, digits)

    return {
        "n": len(data),
        "median": r(statistics.median(data)),
        "p90": r(percentile(data, 0.9)),
        "p99": r(percentile(data, 0.99)),
        "min": r(min(data)),
        "max": r(max(data)),
    }


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def spread(values: Iterable[float | None], digits: int = 3) -> dict[str, Any]:
    """n, min, median and max of the values measured (None ones left out): a figure's
    spread over the runs of one benchmark."""
    data = [v for v in values if v is not None]
    if not data:
        return {"n": 0}
    return {
        "n": len(data),
        "min": round(min(data), digits),
        "median": round(statistics.median(data), digits),
        "max": round(max(data), digits),
    }


def chunks(values: Sequence[Any], count: int) -> list[Sequence[Any]]:
    """``values`` cut into ``count`` consecutive runs of near-equal length (fewer when
    there are fewer values): one benchmark's rounds seen as ``count`` runs."""
    count = max(1, min(count, len(values)))
    size, extra = divmod(len(values), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (i < extra)
        out.append(values[start:end])
        start = end
    return out


# ---- processes ------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class PeakRss:
    """Samples a process' RSS on a thread every ``interval`` s; ``peak`` is the highest."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.peak = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started
