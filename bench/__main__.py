"""``python -m bench [NAME ...] [--quick] [--runs N] [--results DIR] [--write]``: run
benchmarks, write JSON, print the summary table (``--write``: also into
docs/benchmarks.md; ``./scripts/bench`` is this with everything installed and running).

A smoke run (``--quick``) writes into bench/results/quick/ unless ``--results`` says
otherwise, never over the full results, and never into docs/benchmarks.md."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.common import QUICK_RESULTS, RESULTS, Context, machine, write_result
from bench.report import load_results, render_table, update_page

ORDER = (
    "ingest",
    "dispatch",
    "storm",
    "storm_replicas",
    "verify_delay",
    "action",
    "loop",
    "retention",
)


def results_dir(quick: bool, given: Path | None) -> Path:
    """Where a run's results go: ``given``, else bench/results (bench/results/quick for a
    smoke run). ValueError for a smoke run pointed at the full results."""
    if given is None:
        return QUICK_RESULTS if quick else RESULTS
    if quick and given.resolve() == RESULTS.resolve():
        raise ValueError(f"a --quick run never writes over the full results in {RESULTS}")
    return given


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "names",
        nargs="*",
        choices=[[], *ORDER],
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(ORDER)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny counts and seconds-long phases"
    )
    parser.add_argument(
        "--runs",
        type=int,
        metavar="N",
        help="how many runs a benchmark that repeats makes (default: its own, at least 3;"
        " each target's spread is over them)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="where the JSON results and the timeline picture go (default: bench/results;"
        " bench/results/quick with --quick)",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="write the summary table (and timeline picture) into docs/benchmarks.md",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each benchmark's scratch directory (logs) for a look",
    )
    args = parser.parse_args(argv)
    if args.quick and args.write:
        parser.error("--write takes a full run's results: a --quick run never rewrites the page")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        args.results = results_dir(args.quick, args.results)
    except ValueError as exc:
        parser.error(str(exc))
    names = args.names or list(ORDER)
    failed: list[str] = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"==> bench {name}: {module.DESCRIPTION}", flush=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"healer-bench-{name}-"))
        started = time.monotonic()
        host = machine()  # the commit and time this run started from
        try:
            result = module.run(
                Context(workdir=workdir, quick=args.quick, results=args.results, runs=args.runs)
            )
        except Exception:
            traceback.print_exc()
            print(f"!!! bench {name} failed; scratch directory kept: {workdir}", flush=True)
            failed.append(name)
            continue
        path = write_result(result, time.monotonic() - started, args.quick, args.results, host)
        print(f"    {path} ({time.monotonic() - started:.0f} s)", flush=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results = load_results(args.results)
    table = render_table(results)
    print("\n" + table)
    if args.write:
        update_page(table, results, args.results)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
