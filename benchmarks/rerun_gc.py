"""The heap freeze A/B: a cached Flows rerun with Streamlit's post-run GC walking the imports, and not.

    .venv/bin/python -m benchmarks.rerun_gc [--changes 30]

Streamlit runs ``gc.collect(2)`` after every script run (``runner.postScriptGC``). The app freezes
the imported heap once, after its first page (``app/serving.freeze_startup_heap``); with
``GEOFLOW_GC_FREEZE=0`` it does not. One light websocket client (``benchmarks/_stclient.py``) opens
the Flows page at N = 100 with 1000 particles and then alternates the step count between two
settings already computed (every change is a cache hit), one change right after the other: the
time to the chart's message, and to the run's end (``script_finished``, after the GC), which is
when the server can take the next change. Writes the ``app_gc`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _browser as B  # noqa: E402
from benchmarks._results import md_table, write_section  # noqa: E402
from benchmarks._stclient import Session  # noqa: E402

CONFIGS = (("heap frozen (shipped)", {}), ("no freeze (GEOFLOW_GC_FREEZE=0)", {"GEOFLOW_GC_FREEZE": "0"}))


async def walk(url: str, changes: int) -> tuple[list[float], list[float]]:
    """(ms to the chart's message, ms to script_finished) of ``changes`` cached step changes."""
    s = Session(url)
    await s.open("steps=100&n=1000")
    for n in (99, 100, 99, 100):  # both settings computed, the freeze done (first page)
        await s.set_widget("steps N", n)
    chart, done = [], []
    for i in range(changes):
        r = await s.set_widget("steps N", 99 if i % 2 == 0 else 100)
        if r.errors or r.chart_ms is None or r.total_ms is None:
            raise RuntimeError(f"change {i}: {r.errors or 'no chart'}")
        chart.append(r.chart_ms)
        done.append(r.total_ms)
    await s.close()
    return chart, done


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=30)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    rows, p50 = [], {}
    for name, env in CONFIGS:
        with B.serve(ROOT, env) as srv:
            chart, done = asyncio.run(walk(srv.url, args.changes))
        p50[name] = B.pct(done, 50)
        rows.append([name, len(done), B.pct(chart, 50), B.pct(chart, 95), p50[name], B.pct(done, 95)])
        print(rows[-1], flush=True)
    (on, off) = (p50[n] for n, _ in CONFIGS)
    body = (
        f"One light client, Flows page, 1000 particles, N = 99/100 alternating (cache hits), each change "
        f"sent when the previous run ended; load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end.\n\n"
        + md_table(
            ["server", "changes", "chart p50 ms", "chart p95 ms", "run end p50 ms", "run end p95 ms"], rows
        )
        + f"\n\nRun end, p50: no freeze / frozen = {off / on:.2f}x."
    )
    if not args.no_write:
        cmd = "python -m benchmarks.rerun_gc " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section("app_gc", "App: Streamlit's GC after each rerun, heap frozen or not", cmd.strip(), body)
    print(body)


if __name__ == "__main__":
    main()
