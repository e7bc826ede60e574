"""``geoflow bench``: run a benchmark script of ``benchmarks/`` (each writes its section of RESULTS.md)."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path
from typing import Any

from geoflow.cli.common import UserError, add_command

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
BENCH_SUITES = ("samplers", "training", "projection", "wgf", "app")


def cmd_bench(args: argparse.Namespace) -> int:
    """Run one benchmark suite (or all), passing only the options each script defines."""
    suites = BENCH_SUITES if args.suite == "all" else (args.suite,)
    for suite in suites:
        script = BENCH_DIR / f"{suite}.py"
        if not script.exists():
            raise UserError(f"benchmark {suite!r} is missing ({script})")
        text = script.read_text()
        argv = [str(script)]
        # pass only the options a script defines (not every benchmark has a quick mode or --data)
        if args.quick and '"--quick"' in text:
            argv.append("--quick")
        if args.data and '"--data"' in text:
            argv += ["--data", args.data]
        print(f"== benchmark {suite}: {' '.join(argv)}")
        old = sys.argv
        try:
            sys.argv = argv
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as e:  # a script's own argparse or exit: its status, not a traceback
            if e.code not in (0, None):
                raise UserError(f"benchmark {suite} exited with status {e.code}") from None
        finally:
            sys.argv = old
    return 0


def register(subparsers: Any) -> None:
    """Add ``bench`` to the command tree."""
    b = add_command(subparsers, "bench", help="run a benchmark (writes benchmarks/RESULTS.md)")
    b.add_argument("--suite", choices=(*BENCH_SUITES, "all"), default="samplers")
    b.add_argument("--quick", action="store_true", help="the scripts' quick mode, where they have one")
    b.add_argument("--data", default=None, help="restrict to one data set where supported")
    b.set_defaults(fn=cmd_bench)
