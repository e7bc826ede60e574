"""App benchmark (issue 9): input-to-redraw latency in a real browser, its breakdown, figure size, cold start.

    .venv/bin/python -m benchmarks.app [--pause 1.0] [--baseline DIR] [--no-browser] [--results PATH]

1. **Browser latency** on the Flows page (1000 particles, the shipped ``eight_gaussians-vp`` model):
   headless Debian chromium against ``streamlit run`` on 127.0.0.1. Each change is timed in the page
   from the input event to the first frame whose chart title shows the new run (``benchmarks/_browser.py``).
   One walk per server configuration, each change to a setting not computed before unless it is a
   revisit:

   - 20 step changes with Euler-Maruyama, N = 100 -> 80 (slider key presses);
   - 20 projection toggles, Euler-Maruyama -> predict-project at N = 80..100;
   - 40 revisits (toggling back, stepping back to a computed N);
   - 20 step changes with predict-project, N = 100 -> 120.

   A pause of ``--pause`` seconds (a user looking at the result) follows every change. Configurations:
   the shipped server (idle-time prefetch of the neighbouring settings on), the same server with
   prefetch off (every new setting computed on demand: the sampler's cost is visible), and with
   ``--baseline DIR`` another checkout (e.g. the code before this change) served the same way, in the
   same run, so ratios compare like with like on this shared machine.
2. **Breakdown**: per change the browser's share (input -> request, the redraw), the server's (request
   -> chart message; the sampler's time and the cache outcome from the server's log); outside
   Streamlit the run, figure build, JSON serialisation and packing, and the cost of a cache hit
   (``st.cache_data`` unpickles a copy on every hit; the byte-budgeted run cache hands out the shared
   read-only object).
3. **Figure size** for 1000 particles x 100 frames, particles only and with every overlay on: as
   plotly JSON and as the live chart sends it (packed by ``geoflow.wire``).
4. **Cold start**: ``streamlit run`` (what ``make run`` starts, on 127.0.0.1) to the first chart drawn.

Writes the ``app`` section of benchmarks/RESULTS.md (or ``--results``).
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import plotly.io as pio  # noqa: E402

from benchmarks import _browser as B  # noqa: E402
from benchmarks._results import RESULTS, md_table, write_section  # noqa: E402
from geoflow import animation, figures, overlays, wire  # noqa: E402
from geoflow.run import RunSpec, ScoreSource, Trajectory, resolve_data, resolve_source, run  # noqa: E402

TARGETS_MS = {
    "step change, Euler-Maruyama": 250.0,
    "step change, predict-project": 350.0,
    "projection toggle -> predict-project": 350.0,
    "revisit (computed before)": 150.0,
}
TARGET_COLD_S = 5.0
TARGET_MB = {"particles only": 1.5, "every overlay on": 3.0}
EM, PP = "Euler-Maruyama", "Predict-project"


# --------------------------------------------------------------------------- outside Streamlit
def serialise(fig) -> str:
    """What st.plotly_chart does with a figure: to_dict, then plotly's JSON encoder."""
    return pio.to_json(fig.to_dict(), validate=False)


def main_job(spec: RunSpec, src: ScoreSource, which: tuple[str, ...] = ()) -> tuple[Trajectory, str, dict]:
    """The Flows page's main job without Streamlit (run, overlays, figure, JSON), each part timed (ms)."""
    density = resolve_data(spec.data)
    ms = {}
    t = time.perf_counter()
    traj = run(spec, density=density, source=src)
    ms["run"] = 1000 * (time.perf_counter() - t)
    layers = []
    t = time.perf_counter()
    if which:
        arrays, _ = overlays.compute_overlays(which, spec, src, density, traj)
        layers = [figures.overlay_layer(a) for a in arrays]
    ms["overlays"] = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    fig = animation.flow_animation(
        traj,
        title=f"{density.name}: {traj.sampler_label}, N={spec.steps}, NFE={traj.nfe} ({traj.source_label})",
        bounds=overlays.plot_bounds(density, src.sde),
        layers=layers,
    )
    ms["figure"] = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    js = serialise(fig)
    ms["json"] = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    ms["packed bytes"] = len(wire.pack_figure(fig.raw))  # what the live chart sends (app/live_chart.py)
    ms["pack"] = 1000 * (time.perf_counter() - t)
    return traj, js, ms


def score_cost_ms(src: ScoreSource, n: int = 1000, repeats: int = 50) -> float:
    """CPU ms of one score evaluation on n particles (what every sampler step pays, once or twice)."""
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    t = torch.full((n,), 0.5)
    with torch.inference_mode():
        src.score_fn(x, t)
        c0 = time.process_time()
        for _ in range(repeats):
            src.score_fn(x, t)
    return 1000 * (time.process_time() - c0) / repeats


def server_parts(repeats: int) -> list[list[object]]:
    """Median ms of each part of a change, outside Streamlit (one torch thread, as the server runs)."""
    base = RunSpec(data="eight_gaussians", steps=100, n=1000)
    src = resolve_source(base, resolve_data(base.data))
    main_job(base, src)  # warm-up
    rows = []
    for label, spec in (
        ("Euler-Maruyama, N=100", base),
        ("predict-project, N=100", replace(base, sampler="predict_project")),
    ):
        parts: dict[str, list[float]] = {}
        for i in range(repeats):
            traj, js, ms = main_job(replace(spec, seed=i + 1), src)
            for k, v in ms.items():
                parts.setdefault(k, []).append(v)
        m = {k: statistics.median(v) for k, v in parts.items()}
        rows.append(
            [
                label,
                traj.nfe,
                traj.paths.shape[0],
                m["run"],
                m["figure"],
                m["json"],
                len(js) / 1e6,
                m["pack"],
                m["packed bytes"] / 1e6,
            ]
        )
    return rows


def cache_hit_cost(repeats: int = 30) -> list[list[object]]:
    """One cache hit of a 1000-particle N=100 trajectory: st.cache_data's unpickle vs the run cache."""
    sys.path.insert(0, str(ROOT / "app"))
    import serving

    spec = RunSpec(data="eight_gaussians", steps=100, n=1000, sampler="predict_project")
    traj = run(spec)
    blob = pickle.dumps(traj)
    lru = serving.ByteLRU(1 << 30)
    lru.put("k", serving.freeze(traj))
    rows = []
    for label, fn in (
        ("st.cache_data (unpickle a copy)", lambda: pickle.loads(blob)),
        ("byte-budgeted run cache (shared, read-only)", lambda: lru.peek("k")),
    ):
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(1000 * (time.perf_counter() - t))
        rows.append([label, traj.nbytes() / 1e6, statistics.median(ts)])
    return rows


def figure_size() -> list[list[object]]:
    """The figure for 1000 particles x 100 frames (50 noising + 50 generation), without and with
    overlays: as plotly JSON (exports, ``st.plotly_chart``) and as the live chart sends it (packed)."""
    spec = RunSpec(data="eight_gaussians", steps=49, n=1000)
    src = resolve_source(spec, resolve_data(spec.data))
    rows = []
    for name, which in (("particles only", ()), ("every overlay on", tuple(overlays.OVERLAYS))):
        traj, js, ms = main_job(spec, src, which)
        mb = ms["packed bytes"] / 1e6
        ok = "yes" if mb <= TARGET_MB[name] else "NO"
        rows.append(
            [name, traj.paths.shape[0], traj.paths.shape[1], len(js.encode()) / 1e6, mb, TARGET_MB[name], ok]
        )
    return rows


def flows_walk(tab: B.Tab, pause: float, log=print, k: int = 20) -> None:
    """The measured walk (module docstring; ``k`` changes of each kind); ``tab`` is on a fresh session."""

    def step(kind: str, action: str, n: int, label: str) -> None:
        c = tab.change(kind, action, [f"N={n},", label])
        log(f"  {kind:38s} N={n:3d} {c.total_ms:7.0f} ms ({c.how or '-'}, sampler {c.sampler_ms:.0f} ms)")
        time.sleep(pause)

    tab.open("steps=100&n=1000", ["N=100,", EM])
    time.sleep(max(pause, 1.0))
    for n in range(99, 99 - k, -1):
        step("step change, Euler-Maruyama", "ArrowLeft", n, EM)
    for n in range(100 - k, 100):
        step("projection toggle -> predict-project", "toggle", n, PP)
        step("revisit (computed before)", "toggle", n, EM)
        step("revisit (computed before)", "ArrowRight", n + 1, EM)
    step("projection toggle -> predict-project", "toggle", 100, PP)
    for n in range(101, 101 + k):
        step("step change, predict-project", "ArrowRight", n, PP)


def med(xs: list[float]) -> float:
    ok = [x for x in xs if x == x]
    return statistics.median(ok) if ok else float("nan")


def summarise(changes: list[B.Change]) -> list[list[object]]:
    rows = []
    for kind in TARGETS_MS:
        cs = [c for c in changes if c.kind == kind]
        if not cs:
            continue
        tot = [c.total_ms for c in cs]
        p95 = B.pct(tot, 95)
        hits = sum(c.how in ("hit", "shared") for c in cs)
        rows.append(
            [
                kind,
                len(cs),
                B.pct(tot, 50),
                p95,
                min(tot),
                max(tot),
                TARGETS_MS[kind],
                "yes" if p95 <= TARGETS_MS[kind] else "NO",
                med([c.frontend_ms for c in cs]),
                med([c.server_ms for c in cs]),
                med([c.sampler_ms for c in cs]),
                med([c.redraw_ms for c in cs]),
                med([c.react_ms for c in cs]),
                med([c.script_ms for c in cs]),
                f"{hits}/{len(cs)}",
                med([c.chart_bytes / 1e6 for c in cs if c.chart_bytes > 50_000]),
            ]
        )
    return rows


def browser_configs(
    pause: float, baseline: Path | None, k: int = 20, log=print
) -> tuple[dict[str, list], dict[str, float]]:
    configs: list[tuple[str, Path, dict[str, str]]] = [
        ("shipped (prefetch on)", ROOT, {}),
        ("prefetch off", ROOT, {"GEOFLOW_PREFETCH": "0"}),
    ]
    if baseline is not None:  # its own geoflow first on the path (the venv's editable install is this tree)
        configs.append((f"baseline {baseline.name}", baseline, {"PYTHONPATH": str(baseline)}))
    out: dict[str, list] = {}
    loads: dict[str, float] = {}
    for name, root, env in configs:
        log(f"{name}: serving {root}")
        loads[name] = os.getloadavg()[0]
        with B.serve(root, env) as srv, B.browser(1) as pages:
            tab = B.Tab(pages[0], srv, read_log=root == ROOT)
            flows_walk(tab, pause, log, k)
            out[name] = summarise(tab.changes)
    return out, loads


def cold_start(repeats: int = 3) -> list[list[object]]:
    """Seconds from `streamlit run` (as `make run` starts it) to health OK and to the first chart's points.

    The browser is open before the server starts, as a user's is: chromium's own start (1-2 s here)
    is not the app's. Each start is a fresh server process and a fresh browser context (nothing
    cached). One row: starts, median s to health, median and max s to the first chart, target, met.
    """
    health, chart = [], []
    with B.browser(1) as pages:
        for _ in range(repeats):
            ctx = pages[0].context.browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
            pg = ctx.new_page()
            with B.serve(ROOT) as srv:
                pg.goto(srv.url)
                pg.wait_for_function(B.HAS_POINTS, polling="raf", timeout=180_000)
                health.append(srv.healthy_s)
                chart.append(time.perf_counter() - srv.started)
            ctx.close()
    med_chart = statistics.median(chart)
    ok = "yes" if med_chart <= TARGET_COLD_S else "NO"
    return [[repeats, statistics.median(health), med_chart, max(chart), TARGET_COLD_S, ok]]


# --------------------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pause", type=float, default=1.0, help="seconds after each change (a user looking)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the outside-Streamlit timings")
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout, served the same way")
    ap.add_argument("--no-browser", action="store_true", help="skip the browser measurements")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the RESULTS.md to write")
    ap.add_argument("--changes", type=int, default=20, help="changes of each kind per walk (>= 20 to report)")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    spec0 = RunSpec(data="eight_gaussians")
    src0 = resolve_source(spec0, resolve_data(spec0.data))
    per_nfe = score_cost_ms(src0)
    parts = server_parts(args.repeats)
    hit_rows = cache_hit_cost()
    size_rows = figure_size()
    why = "" if not args.no_browser else "skipped (--no-browser)"
    why = why or B.have_browser()
    walks, loads, cold = {}, {}, None
    if not why:
        cold = cold_start()
        walks, loads = browser_configs(args.pause, args.baseline, args.changes)
    load1 = os.getloadavg()
    head = [
        "change",
        "n",
        "p50 ms",
        "p95 ms",
        "min",
        "max",
        "target p95",
        "met",
        "frontend",
        "server",
        "sampler",
        "redraw",
        "of it plotly",
        "script",
        "cache hits",
        "chart MB",
    ]
    sections = [
        f"Flows page, 1000 particles, score: {src0.label}. Load average (1/5/15 min) at the start "
        f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, at the end "
        f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f}, "
        f"on {os.cpu_count()} cores shared with other jobs: compare the configurations of this run with "
        "each other (ratios), not with another day's numbers.",
    ]
    if walks:
        sections.append(
            f"**Input to redraw in headless chromium** (ms; a {args.pause:g} s pause after each change; "
            "breakdown columns are medians: frontend = input to the rerun request, server = request to "
            "the chart's message, sampler = the server's sampler time in that change (0 on a cache hit), "
            "redraw = the chart's message to the new title on screen, of it plotly = the live chart's "
            "decode + Plotly.react (blank for st.plotly_chart), script = the server's whole script run, "
            "which goes on after the chart's message)"
        )
        for name, rows in walks.items():
            sections.append(f"*{name}* (load average {loads[name]:.1f} when it started)")
            sections.append(md_table(head, rows))
        if len(walks) > 1:
            names = list(walks)
            ratio_rows = []
            for kind in (r[0] for r in walks[names[0]]):
                vals = [next((r[2] for r in walks[nm] if r[0] == kind), float("nan")) for nm in names]
                ratio_rows.append([kind, *vals, *(v / vals[0] for v in vals[1:])])
            sections.append(
                md_table(["change (p50 ms)", *names, *(f"{nm} / {names[0]}" for nm in names[1:])], ratio_rows)
            )
    else:
        sections.append(f"Browser latency: not measured ({why}).")
    sections += [
        f"**Outside Streamlit** (median of {args.repeats}, one torch thread; a new seed each time, so "
        f"every run is computed). One score evaluation on 1000 particles costs {per_nfe:.2f} CPU ms, "
        "so the sampler needs about NFE x that.",
        md_table(
            ["run", "NFE", "frames", "run ms", "figure ms", "JSON ms", "JSON MB", "pack ms", "packed MB"],
            parts,
        ),
        "**A cache hit** of a predict-project N=100 trajectory (median ms):",
        md_table(["cache", "trajectory MB", "hit ms"], hit_rows),
        "**Figure size**, 1000 particles x 100 frames, every frame sent once. Plotly JSON (float32 "
        "base64 arrays) is what exports and `st.plotly_chart` take; the live chart sends the figure "
        "packed (`geoflow.wire`: one binary body, arrays on linear axes as int16 on their own range, "
        "error at most 1/131068 of that range). The target is judged on the bytes sent:",
        md_table(
            ["figure", "frames", "particles", "plotly JSON MB", "sent MB", "target MB", "met"], size_rows
        ),
    ]
    if cold is not None:
        sections += [
            "**Cold start**: `streamlit run` on 127.0.0.1, as `make run` starts it, to "
            "the first chart's points in a chromium that was open before (a fresh context each time); "
            f"target <= {TARGET_COLD_S:.0f} s, on the median:",
            md_table(["starts", "health s", "first chart s (median)", "max s", "target s", "met"], cold),
        ]
    body = "\n\n".join(sections)
    given = list(argv if argv is not None else sys.argv[1:])
    if "--results" in given:
        i = given.index("--results")
        del given[i : i + 2]
    cmd = " ".join(["python -m benchmarks.app", *given])
    write_section(
        "app",
        "App: input to redraw in the browser, breakdown, figure size, cold start",
        cmd,
        body,
        args.results,
    )
    print(body)


if __name__ == "__main__":
    main()
