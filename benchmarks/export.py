"""Export benchmark: a 100-frame animation rendered from the Flows page's own figure (kaleido), to GIF/MP4.

    .venv/bin/python -m benchmarks.export [--frames 100] [--particles 1000]

The figure is the one the Flows page draws for two_moons with both gradient-flow overlays (exact p_t
contours, the interpolated JKO path), the W2 numbers and the W2 / free-energy curves: every frame is
``geoflow.animation.still_figure`` of it, rendered by kaleido (headless Chromium), at screen size
(1200 x 800) and slide size (1920 x 1080, large fonts). Times are wall-clock on this machine,
including Chromium's start; the encodes are timed separately. Writes the ``export`` section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._results import md_table, write_section  # noqa: E402
from geoflow import animation, export, figures, overlays  # noqa: E402
from geoflow.densities import get_density  # noqa: E402
from geoflow.run import RunSpec, resolve_source, run  # noqa: E402


def flows_figure(n_frames: int, particles: int) -> animation.AnimatedFigure:
    """The Flows page's figure with both overlays, numbers and curves, with about ``n_frames`` frames."""
    steps = max(1, n_frames // 2 - 1)  # forward frames mirror the reverse grid: 2 (N + 1) frames
    spec = RunSpec(data="two_moons", steps=steps, n=particles)
    density = get_density(spec.data)
    src = resolve_source(spec, density)
    traj = run(spec, density=density, source=src)
    ovs, _ = overlays.compute_overlays(("exact marginal", "JKO path"), spec, src, density, traj)
    jko = next(o.xy for o in ovs if o.role == "JKO path")
    agree = overlays.frame_agreement(spec, src.sde, density, traj, jko)
    return animation.flow_animation(
        traj,
        title=f"two_moons: {traj.sampler_label}, N={steps}, NFE={traj.nfe}",
        bounds=overlays.plot_bounds(density, src.sde),
        layers=[figures.overlay_layer(o) for o in ovs],
        agreement=agree,
        charts=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--particles", type=int, default=1000)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    if export.find_chromium() is None:
        raise SystemExit("needs Chromium for kaleido (apt-get install chromium)")
    fig = flows_figure(args.frames, args.particles)
    picks = export.animation_frames(len(fig.raw_frames), args.frames)
    rows = []
    for name in ("screen", "slide"):
        style = export.EXPORT_STYLES[name]
        t0 = time.perf_counter()
        png = export.static_image(animation.still_figure(fig, len(picks) // 2), "png", style=style)
        t_png = time.perf_counter() - t0
        t0 = time.perf_counter()
        imgs = export.render_frames(fig, picks, style=style)
        t_render = time.perf_counter() - t0
        t0 = time.perf_counter()
        gif = export.gif_bytes(imgs)
        t_gif = time.perf_counter() - t0
        t0 = time.perf_counter()
        mp4 = export.mp4_bytes(imgs)
        t_mp4 = time.perf_counter() - t0
        rows.append(
            [
                f"{name} ({style.width} x {style.height})",
                len(picks),
                round(t_png, 1),
                round(t_render, 1),
                round(1000 * t_render / len(picks)),
                round(t_gif, 1),
                round(t_mp4, 1),
                round(len(gif) / 2**20, 1),
                round(len(mp4) / 2**20, 1),
                round(len(png) / 2**10),
            ]
        )
        print(rows[-1], flush=True)
    headers = [
        "size",
        "frames",
        "PNG (s)",
        "render frames (s)",
        "ms / frame",
        "GIF encode (s)",
        "MP4 encode (s)",
        "GIF (MB)",
        "MP4 (MB)",
        "PNG (kB)",
    ]
    body = (
        f"The Flows page's figure (two_moons, {args.particles} particles, exact p_t contours, interpolated "
        "JKO path, W2 numbers and curves), every frame rendered by kaleido from the same plotly figure "
        f"the screen shows ({export.RENDER_TABS} Chromium tabs; the time includes Chromium's start). "
        "A movie export shows at most "
        f"{export.MAX_ANIMATION_FRAMES} frames, so this is the longest one the app makes; the app "
        "shows a progress bar per frame.\n\n" + md_table(headers, rows)
    )
    print(body)
    if not args.no_write:
        write_section(
            "export", "Exports: a 100-frame animation from the screen's figure", " ".join(sys.argv), body
        )


if __name__ == "__main__":
    main()
