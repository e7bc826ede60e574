"""App benchmark: time of the Flows page's main job (no Streamlit import), figure size, cold start.

    .venv/bin/python -m benchmarks.app [--repeats 7] [--no-browser]

1. Server time of a projection toggle and of a step-count change on the Flows page: a new trajectory
   (1000 particles x 100 steps, forward path + sampler) plus the figure, serialised as Streamlit does
   (``fig.to_dict()`` + ``plotly.io.to_json``). Median over repeats; the target is <= 300 ms.
2. Size of the figure JSON for 1000 particles x 100 frames (float32 typed arrays); target < 3 MB.
3. Cold start: ``streamlit run`` to the first chart drawn (plotly points in the DOM) in headless
   Debian chromium; target <= 10 s.

The score is the shipped ``eight_gaussians-vp`` network when present (what `make run` serves), else
the exact mixture score (noted in the table). Writes the ``app`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import plotly.io as pio  # noqa: E402

from benchmarks._results import md_table, write_section  # noqa: E402
from geoflow import figures, overlays  # noqa: E402
from geoflow.run import RunSpec, ScoreSource, Trajectory, resolve_source, run  # noqa: E402

TARGET_MS, TARGET_MB, TARGET_COLD_S = 300.0, 3.0, 10.0


def serialise(fig: figures.AnimatedFigure) -> str:
    """What st.plotly_chart does with a figure: to_dict, then plotly's JSON encoder."""
    return pio.to_json(fig.to_dict(), validate=False)


def main_job(spec: RunSpec, src: ScoreSource, which: tuple[str, ...] = ()) -> tuple[Trajectory, str]:
    """The Flows page's main job without Streamlit: run, overlays, figure, JSON (the same library calls)."""
    density = overlays_density(spec)
    traj = run(spec, density=density, source=src)
    layers = []
    if which:
        arrays, _ = overlays.compute_overlays(which, spec, src, density, traj)
        layers = [figures.overlay_layer(a) for a in arrays]
    fig = figures.flow_animation(
        traj,
        title=f"{density.name}: {traj.sampler_label}, N={spec.steps}, NFE={traj.nfe} ({traj.source_label})",
        bounds=overlays.plot_bounds(density, src.sde),
        layers=layers,
    )
    return traj, serialise(fig)


def rerun_ms(spec: RunSpec, src: ScoreSource) -> tuple[float, float, int, int]:
    """One settings change: trajectory + figure + JSON; (wall ms, CPU ms, frames, NFE).

    CPU time (this process, one torch thread) is reported beside wall time because other jobs share
    this machine: under contention the wall time measures the queue, the CPU time the work.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    traj, _ = main_job(spec, src)
    return 1000 * (time.perf_counter() - t0), 1000 * (time.process_time() - c0), traj.paths.shape[0], traj.nfe


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


def time_changes(repeats: int) -> tuple[list[list[object]], str]:
    base = RunSpec(data="eight_gaussians", steps=100, n=1000, score="auto")
    src = resolve_source(base, overlays_density(base))
    rerun_ms(base, src)  # warm-up: imports, plotly templates
    pp = replace(base, sampler="predict_project", projection="tweedie")
    rows = []
    for label, spec in (
        ("projection toggle (EM -> predict-project, N=100)", pp),
        ("step change (N=100 -> 99, EM)", replace(base, steps=99)),
        ("step change (N=100 -> 99, predict-project)", replace(pp, steps=99)),
    ):
        walls, cpus = [], []
        for _ in range(repeats):
            ms, cpu, frames, nfe = rerun_ms(spec, src)
            walls.append(ms)
            cpus.append(cpu)
        med, cpu = statistics.median(walls), statistics.median(cpus)
        ok = "yes" if med <= TARGET_MS else ("CPU only" if cpu <= TARGET_MS else "NO")
        rows.append([label, frames, nfe, med, min(walls), max(walls), cpu, ok])
    return rows, src.label


def overlays_density(spec: RunSpec):
    from geoflow.run import resolve_data

    return resolve_data(spec.data)


def figure_size() -> list[list[object]]:
    spec = RunSpec(data="eight_gaussians", steps=49, n=1000)  # 50 noising + 50 generation frames
    src = resolve_source(spec, overlays_density(spec))
    rows = []
    cases = (("particles only", ()), ("+ x0_hat and velocity arrows", ("x0_hat", "velocity field")))
    for name, which in cases:
        traj, js = main_job(spec, src, which)
        mb = len(js.encode()) / 1e6
        rows.append([name, traj.paths.shape[0], traj.paths.shape[1], mb, "yes" if mb < TARGET_MB else "NO"])
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_start() -> tuple[float | None, float | None, str]:
    """Seconds from `streamlit run` to health OK and to the first plotly points in chromium."""
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        return None, None, "no /usr/bin/chromium"
    from playwright.sync_api import sync_playwright

    port = _free_port()
    streamlit = Path(sys.executable).parent / "streamlit"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            str(streamlit),
            "run",
            str(ROOT / "app" / "streamlit_app.py"),
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
            if time.perf_counter() - t0 > 120:
                return None, None, "server did not start in 120 s"
        health = time.perf_counter() - t0
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=180_000)
            first = time.perf_counter() - t0
            browser.close()
        return health, first, ""
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-browser", action="store_true", help="skip the cold-start measurement")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    rows, label = time_changes(args.repeats)
    spec0 = RunSpec(data="eight_gaussians")
    per_nfe = score_cost_ms(resolve_source(spec0, overlays_density(spec0)))
    size_rows = figure_size()
    health, first, why = (None, None, "skipped") if args.no_browser else cold_start()
    cold_ok = first is not None and first <= TARGET_COLD_S
    body = "\n\n".join(
        [
            f"Score: {label}. Load average at the start: {load:.1f} on {os.cpu_count()} cores "
            "(other jobs share "
            "this machine; timings scale with it).",
            "**Server time of a settings change on the Flows page** (new trajectory of 1000 "
            "particles, forward "
            f"path + sampler, figure, JSON; median of {args.repeats}; target <= {TARGET_MS:.0f} ms)",
            f"One score evaluation on 1000 particles costs {per_nfe:.2f} CPU ms here, so the "
            "sampler alone needs "
            f"about NFE x {per_nfe:.1f} ms; the figure and its JSON add about 0.1 s.",
            md_table(
                ["change", "frames", "NFE", "median ms", "min ms", "max ms", "median CPU ms", "target met"],
                rows,
            ),
            f"**Figure JSON** (float32 base64 arrays; target < {TARGET_MB:.0f} MB)",
            md_table(["figure", "frames", "particles", "MB", "target met"], size_rows),
            "**Cold start** (`streamlit run` to the first chart's points in headless chromium; target "
            f"<= {TARGET_COLD_S:.0f} s): "
            + (
                f"server healthy after {health:.1f} s, first chart after {first:.1f} s "
                f"({'met' if cold_ok else 'NOT met'})."
                if first is not None and health is not None
                else f"not measured ({why})."
            ),
        ]
    )
    cmd = "python -m benchmarks.app" + (f" --repeats {args.repeats}" if args.repeats != 7 else "")
    write_section("app", "App: responsiveness, figure size, cold start", cmd, body)
    print(body)


if __name__ == "__main__":
    main()
