"""Soak benchmark (issue 10): server memory under the worst mix of settings, then a few hundred page loads.

    .venv/bin/python -m benchmarks.soak [--worst 40] [--loads 200]

One ``streamlit run`` on 127.0.0.1; every load is a new session (a light websocket client,
``benchmarks/_stclient.py``) that opens a link, waits for the page's script to finish, checks that
no error or exception is shown, and closes. Bounded: it stops by itself.

1. *Worst case*: ``--worst`` loads with the largest settings each page allows, all different (Flows at
   2000 particles x 200 steps with predict-project and the overlays, the Projection page's three
   runs, the Images page at 64 samples x 200 steps, ...), so every cache fills to its budget.
   Target: the server's RSS stays under 1.5 GB.
2. *Ordinary loads*: ``--loads`` loads of everyday links (defaults, a few step counts and seeds,
   every page). Target: they add at most 50 MB after the warm-up.

RSS (VmRSS of the server process) is read after every load. Writes the ``soak`` section of
benchmarks/RESULTS.md (or ``--results``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _browser as B  # noqa: E402
from benchmarks._results import RESULTS, md_table, write_section  # noqa: E402
from benchmarks._stclient import Session  # noqa: E402

TARGET_PEAK_MB = 1536.0
TARGET_GROWTH_MB = 50.0


def worst_links(k: int) -> list[tuple[str, str]]:
    """``k`` different heavy links: (page, query)."""
    rng = random.Random(0)
    out = []
    heavy_overlays = "exact marginal,velocity field,x0_hat,warped grid"
    for i in range(k):
        kind = i % 5
        seed = 1000 + i
        if kind in (0, 1):
            sampler = "project=true" if kind == 0 else "sampler=ddim"
            out.append(
                (
                    "",
                    f"n=2000&steps={200 - rng.randrange(10)}&{sampler}&seed={seed}&overlays={heavy_overlays}",
                )
            )
        elif kind == 2:
            out.append(("projection", f"n=2000&steps={100 + rng.randrange(100)}&seed={seed}"))
        elif kind == 3:
            out.append(("images", f"img_n=64&img_steps={150 + rng.randrange(50)}&img_seed={seed}"))
        else:
            density = rng.choice(["two_moons", "checkerboard", "swiss_roll", "grid25", "pinwheel"])
            out.append(("", f"density={density}&n=2000&steps=200&seed={seed}&curves=true"))
    return out


def ordinary_links(k: int) -> list[tuple[str, str]]:
    rng = random.Random(1)
    choices = [
        ("", ""),
        ("", "steps=20"),
        ("", "steps=100"),
        ("", "project=true"),
        ("projection", ""),
        ("maths", ""),
        ("train", ""),
        ("images", ""),
    ]
    out = []
    for _ in range(k):
        page, q = rng.choice(choices)
        if page == "" and rng.random() < 0.5:
            q = (q + "&" if q else "") + f"seed={rng.randrange(4)}"
        out.append((page, q))
    return out


async def load(url: str, page: str, query: str, timeout: float) -> tuple[float, list[str]]:
    s = Session(url, timeout=timeout)
    t0 = time.perf_counter()
    try:
        await s.open(query)  # the default page first: it tells us the other pages' hashes
        res = await s.rerun(page=page) if page else None
        errors = [] if res is None else res.errors
        return time.perf_counter() - t0, errors
    finally:
        await s.close()


def run_loads(
    srv: B.Server, links: list[tuple[str, str]], timeout: float, log
) -> tuple[list[float], list[str], list]:
    rss, errors, secs = [], [], []
    for i, (page, q) in enumerate(links):
        try:
            dt, errs = asyncio.run(load(srv.url, page, q, timeout))
        except Exception as e:  # noqa: BLE001
            dt, errs = float("nan"), [f"{type(e).__name__}: {e}"]
        secs.append(dt)
        errors += [f"/{page}?{q}: {e}" for e in errs]
        rss.append(srv.rss())
        if (i + 1) % 10 == 0:
            log(f"  {i + 1:4d} loads, RSS {rss[-1]:.0f} MB, last load {dt:.1f} s")
    return rss, errors, secs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worst", type=int, default=40, help="worst-case loads (all different)")
    ap.add_argument("--loads", type=int, default=200, help="ordinary loads after the warm-up")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one load may take")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    log = lambda m: print(m, flush=True)  # noqa: E731
    peak = [0.0]
    stop = threading.Event()
    with B.serve(ROOT) as srv:

        def sample() -> None:
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], srv.rss())
                except OSError:
                    return
                stop.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start_rss = srv.rss()
        log(f"worst case: {args.worst} heavy loads")
        t0 = time.perf_counter()
        w_rss, w_err, w_secs = run_loads(srv, worst_links(args.worst), args.timeout, log)
        worst_s = time.perf_counter() - t0
        warm_rss = srv.rss()
        warm_peak = peak[0]
        log(f"ordinary: {args.loads} loads")
        t0 = time.perf_counter()
        o_rss, o_err, o_secs = run_loads(srv, ordinary_links(args.loads), args.timeout, log)
        ord_s = time.perf_counter() - t0
        stop.set()
        sampler.join(5)
        end_rss = srv.rss()
    load1 = os.getloadavg()
    growth = end_rss - warm_rss
    steps = sorted({k for k in (0, 9, 49, 99, 149, len(o_rss) - 1) if 0 <= k < len(o_rss)})
    trace = [[k + 1, o_rss[k]] for k in steps]
    errors = w_err + o_err
    body = "\n\n".join(
        [
            "One server on 127.0.0.1, each load a new session (light websocket client) that opens a link "
            f"and closes; loads one after another. Load average {load0[0]:.1f} at the start, "
            f"{load1[0]:.1f} at the end. Run cache budget: "
            f"{os.environ.get('GEOFLOW_RUN_CACHE_MB', '256')} MB (GEOFLOW_RUN_CACHE_MB).",
            md_table(
                ["phase", "loads", "time s", "RSS at the end MB", "peak RSS MB", "target", "met"],
                [
                    ["server started", 0, 0.0, start_rss, start_rss, "", ""],
                    [
                        "worst case (largest settings, all different)",
                        len(w_rss),
                        worst_s,
                        warm_rss,
                        warm_peak,
                        f"peak < {TARGET_PEAK_MB:.0f}",
                        "yes" if warm_peak < TARGET_PEAK_MB else "NO",
                    ],
                    [
                        "ordinary loads after it",
                        len(o_rss),
                        ord_s,
                        end_rss,
                        peak[0],
                        f"growth <= {TARGET_GROWTH_MB:.0f}",
                        ("yes" if growth <= TARGET_GROWTH_MB else "NO") + f" ({growth:+.0f} MB)",
                    ],
                ],
            ),
            "RSS during the ordinary loads (MB):",
            md_table(["loads", "RSS MB"], trace),
            f"Errors shown to a session: {len(errors)}"
            + ("" if not errors else " - " + "; ".join(errors[:5])),
        ]
    )
    given = list(argv if argv is not None else sys.argv[1:])
    if "--results" in given:
        i = given.index("--results")
        del given[i : i + 2]
    write_section(
        "soak", "App: memory soak", " ".join(["python -m benchmarks.soak", *given]), body, args.results
    )
    print(body)


if __name__ == "__main__":
    main()
