"""``geoflow flow``: the JKO path of a density, its exact path, free energy and W2 curves, to a .npz.

``geoflow flow --density eight_gaussians --h 0.1 --keyframes 20 --n 1000 --out p.npz`` (or
``python -m geoflow flow ...``). The inputs are checked, and the work estimated, before anything is
allocated (:func:`geoflow.validate.check_flow`); the ``.npz`` and the figure are written atomically.

Arrays written (K keyframes, n particles):

* ``t`` (K,) VP times, ``s`` (K,) flow times ``int_0^t beta``;
* ``jko`` (K, n, 2) the blob JKO path (:func:`geoflow.jko.jko_path`), started at the data particles;
* ``exact`` (K, n, 2) the exact SDE path from the same data particles (mixtures only);
* ``free_energy`` (K,) KL(mu || N(0, I)) of the JKO particles by the k-NN estimator,
  ``free_energy_blob`` (K,) the blob functional the JKO minimises,
  ``free_energy_exact`` (K,) the exact value (mixtures only);
* ``w2_to_exact`` (K,) exact W2 (POT) between the JKO particles and an independent exact sample of
  mu_t (data sampled afresh and pushed through the exact forward kernel; any density), and
  ``w2_floor`` (K,) the same distance between two exact samples (the finite-sample floor);
* ``w2_step`` (K-1,) W2 between consecutive JKO keyframes, ``flow_length`` their sum,
  ``jko_displacement`` (K-1,) the identity-coupling lengths, ``exact_length`` the exact path's W2
  length (mixtures only, :func:`geoflow.wgf.exact_path_length`);
* ``geodesic`` (K, n, 2) McCann's W2 geodesic from the data particles to a prior sample, and
  ``geodesic_length`` its length W2(data, prior) (to compare with ``flow_length``);
* ``h``, ``seed``, ``n``, ``density`` (a string), ``seconds_jko``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoflow.atomic import atomic_write
from geoflow.cli.common import SEED_HELP, add_command, guarded, limits_epilog, write_npz
from geoflow.densities import GaussianMixture, load_density
from geoflow.sde import VPSDE
from geoflow.validate import LIMITS, check_flow, check_output_path, check_seed

FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp")
S_MAX = float(VPSDE().int_beta(VPSDE().T))  # int_0^T beta of the default VP schedule


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``flow`` subcommand; ``args.fn`` is the handler, ``args.func`` the handler with the
    CLI's error handling (one line and exit status 2 on bad input)."""
    h_min = S_MAX / LIMITS.jko_steps
    p = add_command(
        subparsers,
        "flow",
        help="JKO path, exact path, free energy and W2 curves of a density (Wasserstein gradient flow)",
        description=(
            "Compute the JKO (minimizing-movement) path of KL(. || N(0, I)) on particles over the whole "
            "VP path, the exact path where one exists, the free energy and W2 curves, and the W2 geodesic "
            "from data to prior; write them to a .npz (and optionally a figure)."
        ),
        epilog=limits_epilog(
            f"--h in [{h_min:.3g}, {S_MAX:.4g}] (at most {LIMITS.jko_steps} JKO steps)",
            f"--keyframes in [2, {LIMITS.keyframes}]",
            f"--n in [{LIMITS.min_particles}, {LIMITS.flow_particles}]",
            f"work n^2 x (JKO steps + 3 x keyframes) <= {LIMITS.flow_work:.3g} (about a minute per 1e9)",
        ),
    )
    p.add_argument("--density", required=True, help="preset name, a .json mixture spec, or a .csv of points")
    p.add_argument(
        "--h",
        type=float,
        default=0.1,
        help=f"JKO step in flow time s = int beta, in [{h_min:.3g}, {S_MAX:.4g}] (default 0.1)",
    )
    p.add_argument(
        "--keyframes",
        type=int,
        default=20,
        help=f"keyframes over [0, T], in [2, {LIMITS.keyframes}] (default 20)",
    )
    p.add_argument(
        "--n",
        type=int,
        default=1000,
        help=f"particles in [{LIMITS.min_particles}, {LIMITS.flow_particles}] (default 1000)",
    )
    p.add_argument("--out", required=True, help="output .npz path (checked before any work)")
    p.add_argument(
        "--figure", default=None, help=f"optional figure ({', '.join(FIGURE_SUFFIXES)}; plotly + kaleido)"
    )
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.set_defaults(fn=run_flow, func=guarded(run_flow))
    return p


def compute_flow(
    density_spec: str, h: float, keyframes: int, n: int, seed: int = 0, sde: VPSDE | None = None
) -> dict[str, np.ndarray]:
    """Everything ``geoflow flow`` writes, as a dict of arrays (see the module docstring).

    Raises:
        ValueError: an input out of range, or a run whose estimated work exceeds
            ``LIMITS.flow_work``, before anything is allocated.
    """
    sde = sde or VPSDE()
    check_flow(n, keyframes, h, float(sde.int_beta(sde.T)))
    seed = check_seed(seed)
    # here, not at the top: POT and scikit-learn take seconds to import, and only flow needs them
    from geoflow import jko, metrics, wgf

    density = load_density(density_spec)
    g = torch.Generator().manual_seed(int(seed))
    x0 = density.sample(n, g).to(torch.float64)
    start = time.perf_counter()
    path = jko.jko_path(x0, sde, h, keyframes)
    seconds = time.perf_counter() - start
    ts = path.t
    out: dict[str, np.ndarray] = {
        "t": ts,
        "s": path.s,
        "jko": path.particles,
        "free_energy": path.free_energy,
        "free_energy_blob": path.free_energy_blob,
        "jko_displacement": path.displacement,
        "jko_bandwidth": path.bandwidth,
        "jko_n_steps": path.n_steps,
    }
    # independent exact samples of mu_t for any density: fresh data through the exact forward kernel
    ref = _kernel_path(density.sample(n, g).to(torch.float64), sde, ts, g)
    ref2 = _kernel_path(density.sample(n, g).to(torch.float64), sde, ts, g)
    if isinstance(density, GaussianMixture):
        out["exact"] = wgf.exact_marginal_samples(density, sde, ts, n, g, x0=x0)
        out["free_energy_exact"] = wgf.free_energy_exact(density, ts, sde)
        out["exact_length"] = np.array(wgf.exact_path_length(density, sde, n_mc=2000, generator=g))
    out["w2_to_exact"] = metrics.w2_along(path.particles, ref)
    out["w2_floor"] = metrics.w2_along(ref2, ref)
    out["w2_step"] = metrics.w2_steps(path.particles)
    out["flow_length"] = np.array(out["w2_step"].sum())
    prior = sde.prior_sample((n, x0.shape[1]), g, dtype=torch.float64)
    geo, length = metrics.mccann_geodesic(x0, prior, keyframes)
    out["geodesic"] = geo
    out["geodesic_length"] = np.array(length)
    out.update(
        h=np.array(float(h)),
        seed=np.array(int(seed)),
        n=np.array(int(n)),
        density=np.array(str(getattr(density, "name", density_spec))),
        seconds_jko=np.array(seconds),
    )
    return out


def _kernel_path(x0: torch.Tensor, sde: VPSDE, ts: np.ndarray, g: torch.Generator) -> np.ndarray:
    """``a(t) x0 + s(t) z`` at each t, fresh z per frame: exact samples of mu_t for any data sample."""
    frames = [sde.marginal_sample(x0, float(t), g).numpy() for t in ts]
    return np.stack(frames).astype(np.float32)


def write_figure(res: dict[str, np.ndarray], path: str | Path) -> str:
    """Snapshots of the JKO (and exact) particles at 4 keyframes + free energy and W2 curves.

    Returns a one-line status (written, or why it was skipped).
    """
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:  # pragma: no cover - plotly is a dependency
        return "figure skipped: plotly is not installed"
    ts, jko = res["t"], res["jko"]
    picks = np.unique(np.linspace(0, len(ts) - 1, 4).round().astype(int))
    titles = [f"t = {ts[k]:.2f}" for k in picks] + ["free energy KL(mu_t || N(0, I))", "W2 to exact mu_t"]
    fig = make_subplots(rows=2, cols=4, subplot_titles=titles + [""] * (8 - len(titles)))
    color = np.arctan2(jko[0, :, 1], jko[0, :, 0])  # colour by initial angle: transport stays readable
    for c, k in enumerate(picks, start=1):
        if "exact" in res:
            ex = res["exact"][k]
            fig.add_trace(
                go.Scatter(x=ex[:, 0], y=ex[:, 1], mode="markers", marker={"size": 3, "color": "lightgray"},
                           name="exact", showlegend=c == 1),
                row=1, col=c,
            )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=jko[k, :, 0], y=jko[k, :, 1], mode="markers", name="JKO", showlegend=c == 1,
                       marker={"size": 3, "color": color, "colorscale": "HSV"}),
            row=1, col=c,
        )  # fmt: skip
        fig.update_xaxes(range=[-4, 4], row=1, col=c)
        fig.update_yaxes(range=[-4, 4], row=1, col=c)
    fig.add_trace(go.Scatter(x=ts, y=res["free_energy"], name="JKO (k-NN)"), row=2, col=1)
    fig.add_trace(go.Scatter(x=ts, y=res["free_energy_blob"], name="JKO (blob)"), row=2, col=1)
    if "free_energy_exact" in res:
        fig.add_trace(go.Scatter(x=ts, y=res["free_energy_exact"], name="exact"), row=2, col=1)
    fig.add_trace(go.Scatter(x=ts, y=res["w2_to_exact"], name="W2(JKO, exact)"), row=2, col=2)
    fig.add_trace(go.Scatter(x=ts, y=res["w2_floor"], name="floor"), row=2, col=2)
    fig.update_layout(width=1400, height=750, title=f"JKO path of {res['density']} (h = {float(res['h']):g})")
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        atomic_write(path, lambda f: fig.write_image(f, format=fmt))
    except Exception as e:  # kaleido needs a browser; say so instead of failing the run
        return f"figure skipped: plotly could not export an image ({type(e).__name__}: {e})"
    return f"figure written to {path}"


def run_flow(args: argparse.Namespace) -> int:
    """Handler of ``geoflow flow`` (raises ``ValueError`` on bad input; see :func:`register`)."""
    out = check_output_path(args.out, (".npz",))
    if args.figure:
        check_output_path(args.figure, FIGURE_SUFFIXES, "--figure")
    res = compute_flow(args.density, args.h, args.keyframes, args.n, args.seed)
    write_npz(out, res)
    msg = (
        f"wrote {out}: {len(res['t'])} keyframes x {int(res['n'])} particles; "
        f"JKO {float(res['seconds_jko']):.1f} s; "
        f"max W2(JKO, exact) {res['w2_to_exact'].max():.3f} (floor {res['w2_floor'].max():.3f}); "
        f"flow length {float(res['flow_length']):.3f} vs geodesic {float(res['geodesic_length']):.3f}"
    )
    print(msg)
    if args.figure:
        print(write_figure(res, args.figure))
    return 0
