"""What is drawn with the particles, and the numbers along a path, as arrays (no plotting here).

Overlays of a 2-D :class:`~geoflow.run.Trajectory`, one array per frame so the browser animates
them with the particles: velocity arrows, x0_hat, the warped grid (flow map), the exact marginal,
the JKO path and the W2 geodesic. :func:`path_metrics` gives W2 to the exact path and the free
energy along it; :func:`frame_agreement` gives, at every frame, W2 of the particles to the JKO path
and to the exact marginal with the finite-sample floor (carried in the figure, so the numbers move
with the slider). ``geoflow.figures`` turns an :class:`Overlay` into a plotly trace.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from geoflow import jko, metrics, wgf
from geoflow.densities import Density, GaussianMixture, PointCloud
from geoflow.run import STREAM_DATA, RunSpec, ScoreSource, Trajectory, generator
from geoflow.samplers import sample_ode_euler
from geoflow.score import batch_time, tweedie_x0
from geoflow.sde import SDE, probability_flow_velocity

OVERLAYS = ("exact marginal", "JKO path", "velocity field", "x0_hat", "warped grid", "W2 geodesic")
OverlayKind = str  # "markers" | "lines" | "contour"
ARROW_GRID = 13
CONTOUR_GRID = 64
CONTOUR_MASS = (20, 50, 80)  # iso-density lines enclosing these percentages of p_t's mass
KDE_POINTS = 500  # a sample-only density's marginal: the closed-form p_t of a KDE of this many points
STREAM_KDE = 25
X0_HAT_SHOWN = 300
JKO_PARTICLES = 300  # a non-preset density runs the blob JKO on this many particles
JKO_H = 0.25
JKO_KEYFRAMES = 21
JKO_SHOWN = 400
GEODESIC_PARTICLES = 500
METRIC_FRAMES = 30
METRIC_PARTICLES = 400
AGREEMENT_PARTICLES = 200  # per-frame exact W2 on this many particles (cheap enough for every frame)


@dataclass
class Overlay:
    """One overlay: per-frame arrays and the role that picks its style.

    Attributes:
        name: legend name.
        role: one of :data:`OVERLAYS` (``geoflow.figures`` styles by it).
        kind: ``markers``, ``lines`` (polylines separated by NaN rows) or ``contour``.
        xy: (F, m, 2) float32 for markers / lines.
        z: (F, g, g) for a contour on ``grid`` (g,) in x and y; the exact marginal's is uint8, the
            percentage of p_t's mass enclosed by the iso-density line through each grid point.
        levels: the contour levels to draw (in z's units), if not plotly's own choice.
    """

    name: str
    role: str
    kind: OverlayKind
    xy: np.ndarray | None = None
    z: np.ndarray | None = None
    grid: np.ndarray | None = None
    levels: tuple[float, ...] = ()

    @property
    def n_frames(self) -> int:
        arr = self.z if self.kind == "contour" else self.xy
        assert arr is not None
        return arr.shape[0]


def plot_bounds(density: Density, sde: SDE) -> tuple[float, float]:
    """A square window holding the data and the prior's bulk."""
    lo, hi = density.bounds()
    r = max(abs(lo), abs(hi), 3.2 * sde.prior_std())
    return (-r, r)


def arrow_segments(base: np.ndarray, vec: np.ndarray, head: float = 0.3) -> np.ndarray:
    """Arrows as one polyline with NaN breaks: shaft plus two barbs per arrow.

    Args:
        base: (m, 2) arrow tails.
        vec: (m, 2) arrow vectors (already scaled to plot units).
        head: barb length as a fraction of the arrow length.

    Returns:
        (7 m, 2) float32 points: tail, tip, NaN, barb, tip, barb, NaN for each arrow.
    """
    base = np.asarray(base, dtype=np.float64)
    vec = np.asarray(vec, dtype=np.float64)
    tip = base + vec
    ang = math.radians(25)
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    back = -head * vec
    b1 = tip + back @ rot.T
    b2 = tip + back @ rot
    nan = np.full_like(base, np.nan)
    out = np.stack([base, tip, nan, b1, tip, b2, nan], axis=1).reshape(-1, 2)
    return out.astype(np.float32)


def grid_lines(bounds: tuple[float, float], n_lines: int = 11, n_points: int = 30) -> np.ndarray:
    """Points of a square grid of lines, ordered as polylines with NaN breaks.

    Returns:
        (2 n_lines (n_points + 1), 2) float32; the NaN rows separate the lines.
    """
    lo, hi = bounds
    a = np.linspace(lo, hi, n_lines)
    s = np.linspace(lo, hi, n_points)
    rows = []
    for v in a:
        rows.append(np.stack([s, np.full_like(s, v)], 1))
        rows.append(np.full((1, 2), np.nan))
    for v in a:
        rows.append(np.stack([np.full_like(s, v), s], 1))
        rows.append(np.full((1, 2), np.nan))
    return np.concatenate(rows).astype(np.float32)


# --------------------------------------------------------------------------- the overlays
def compute_overlays(
    which: tuple[str, ...],
    spec: RunSpec,
    source: ScoreSource,
    density: Density,
    traj: Trajectory,
    *,
    density_key: str | None = None,
) -> tuple[list[Overlay], list[str]]:
    """The overlays named in ``which`` for a trajectory, and notes for the ones unavailable.

    Raises:
        ValueError: an unknown overlay name (listing the valid ones).
    """
    unknown = [w for w in which if w not in OVERLAYS]
    if unknown:
        raise ValueError(f"unknown overlay {unknown[0]!r}; valid: {', '.join(OVERLAYS)}")
    bounds = plot_bounds(density, source.sde)
    out: list[Overlay] = []
    notes: list[str] = []
    for name in OVERLAYS:
        if name not in which:
            continue
        try:
            if name == "exact marginal":
                out.append(exact_marginal_overlay(spec, source.sde, density, traj, bounds))
            elif name == "JKO path":
                out.append(jko_overlay(spec, source.sde, density, traj, density_key or spec.data))
            elif name == "velocity field":
                out.append(velocity_overlay(source, traj, bounds))
            elif name == "x0_hat":
                out.append(x0_hat_overlay(source, traj))
            elif name == "warped grid":
                out.append(warped_grid(spec, source, traj, bounds))
            else:
                out.append(geodesic_overlay(traj))
        except (ValueError, RuntimeError) as e:
            notes.append(f"{name} unavailable: {e}")
    for ov in out:
        assert ov.n_frames == traj.paths.shape[0], ov.name
    return out, notes


def marginal_mixture(spec: RunSpec, density: Density) -> tuple[GaussianMixture, str]:
    """The mixture whose closed-form marginals the overlay draws, and how to name it.

    A Gaussian mixture is its own; a density known only through samples (two_moons, ...) is replaced
    by the Gaussian kernel density of ``KDE_POINTS`` fixed data points
    (:class:`~geoflow.densities.PointCloud`): a mixture too, so its p_t is closed form at every t.
    """
    if isinstance(density, GaussianMixture):
        return density, "exact p_t"
    pts = density.sample(KDE_POINTS, generator(spec.seed, STREAM_KDE)).numpy()
    return PointCloud(pts, name=f"KDE of {density.name}"), f"p_t of a {KDE_POINTS}-point KDE"


def mass_levels(p: np.ndarray) -> np.ndarray:
    """Percent of the mass inside the iso-density line through each grid point (highest-density regions).

    Args:
        p: (g, g) density values on a uniform grid.

    Returns:
        (g, g) uint8 in [0, 100]: 0 at the mode, 100 far out; the line at level q encloses q % of
        the (gridded) mass, so the same levels mean the same thing in every frame.
    """
    flat = np.asarray(p, np.float64).ravel()
    order = np.argsort(-flat)
    cum = np.cumsum(flat[order])
    cum /= max(cum[-1], 1e-300)
    out = np.empty_like(flat)
    out[order] = cum
    return np.round(100 * out).astype(np.uint8).reshape(np.shape(p))


def marginal_grid(mix: GaussianMixture, sde: SDE, t: float, grid: np.ndarray) -> np.ndarray:
    """The mixture's marginal density p_t on the square grid ``grid`` x ``grid``: (g, g), ``[iy, ix]``.

    Components with diagonal covariances (every KDE, most presets) factor into x and y, so the grid
    is one (g, K) x (K, g) product; others go through :func:`geoflow.wgf.marginal_density_grid`.
    """
    m, c = mix.marginal_params(t, sde)
    m, c = m.double().numpy(), c.double().numpy()
    if np.abs(c[:, 0, 1]).max() > 0 or np.abs(c[:, 1, 0]).max() > 0:
        g = wgf.marginal_density_grid(mix, sde, t, (float(grid[0]), float(grid[-1])), len(grid))
        return np.asarray(g.P, dtype=np.float64)
    w = mix.weights.double().numpy()
    g = np.asarray(grid, dtype=np.float64)

    def gauss(axis: int) -> np.ndarray:  # (K, g): the 1-D normal density of each component
        var = c[:, axis, axis][:, None]
        return np.exp(-0.5 * (g[None, :] - m[:, axis][:, None]) ** 2 / var) / np.sqrt(2 * math.pi * var)

    return (gauss(1) * w[:, None]).T @ gauss(0)


def exact_marginal_overlay(
    spec: RunSpec, sde: SDE, density: Density, traj: Trajectory, bounds: tuple[float, float]
) -> Overlay:
    """Iso-density lines of the exact marginal p_t in every frame (closed form, see :func:`marginal_mixture`).

    The lines enclose ``CONTOUR_MASS`` percent of p_t's mass, computed once per frame on a
    ``CONTOUR_GRID`` grid.
    """
    mix, what = marginal_mixture(spec, density)
    grid = np.linspace(bounds[0], bounds[1], CONTOUR_GRID)
    z = [mass_levels(marginal_grid(mix, sde, float(np.clip(t, 0.0, sde.T)), grid)) for t in traj.times]
    mass = "/".join(str(m) for m in CONTOUR_MASS)
    return Overlay(
        f"{what}: {mass}% mass lines",
        "exact marginal",
        "contour",
        z=np.stack(z),
        grid=np.asarray(grid, dtype=np.float32),
        levels=tuple(float(m) for m in CONTOUR_MASS),
    )


def jko_keyframes(spec: RunSpec, sde: SDE, density: Density) -> tuple[np.ndarray, np.ndarray]:
    """The JKO path of KL(. || pi): keyframe times (K,) and particles (K, m, 2).

    Presets at seed 0 use the shipped precomputed paths (instant); other densities run the blob
    scheme on ``JKO_PARTICLES`` particles with a coarser step.
    """
    if sde.name != "vp":
        raise ValueError("computed for the VP SDE only (its time change s = int beta)")
    from geoflow.densities import PRESETS

    if spec.data in PRESETS and spec.seed == 0:
        res = jko.preset_jko_path(spec.data)
    else:
        x0 = density.sample(min(spec.n, JKO_PARTICLES), generator(spec.seed, STREAM_DATA)).numpy()
        res = jko.jko_path(x0, sde, JKO_H, JKO_KEYFRAMES)
    return np.asarray(res.t, dtype=np.float64), np.asarray(res.particles[:, :JKO_SHOWN], dtype=np.float32)


def jko_overlay(spec: RunSpec, sde: SDE, density: Density, traj: Trajectory, key: str) -> Overlay:
    """The JKO particles at every frame's time, continuous between keyframes.

    Between two keyframes the particles follow the W2 geodesic of POT's optimal coupling of the two
    (McCann displacement interpolation, :func:`geoflow.metrics.displacement_interpolation`), at the
    fraction of the interval in flow time ``s = int beta`` (the JKO scheme's own time).
    """
    kf_t, kf_x = jko_keyframes(spec, sde, density)
    s_kf, s_frames = wgf.flow_time(sde, kf_t), wgf.flow_time(sde, np.clip(traj.times, 0.0, sde.T))
    xy = metrics.displacement_interpolation(s_kf, kf_x, s_frames)
    return Overlay(f"JKO path ({len(kf_t)} keyframes, interpolated)", "JKO path", "markers", xy=xy)


def velocity(source: ScoreSource, x: torch.Tensor, t: float, reverse: bool) -> torch.Tensor:
    """Probability-flow velocity at forward time t (Theorem 1); its negative when ``reverse``."""
    v = probability_flow_velocity(source.sde, x, t, source.score_fn(x, batch_time(t, x)))
    return -v if reverse else v


def velocity_overlay(source: ScoreSource, traj: Trajectory, bounds: tuple[float, float]) -> Overlay:
    """Velocity arrows on a grid per frame (forward flow while noising, reverse ODE while generating).

    Scaled per frame so the longest arrow is one grid cell: direction and relative speed.
    """
    sde = source.sde
    cell = (bounds[1] - bounds[0]) / ARROW_GRID
    xy = []
    for t, phase in zip(traj.times, traj.phase, strict=True):
        kind = "reverse_ode" if phase == "generation" else "forward"
        vf = wgf.velocity_field(source.score_fn, sde, float(max(t, sde.t_min)), bounds, ARROW_GRID, kind)
        base = np.stack([vf.X.ravel(), vf.Y.ravel()], 1)
        v = np.stack([vf.U.ravel(), vf.V.ravel()], 1)
        v = v / max(float(np.linalg.norm(v, axis=1).max()), 1e-9) * cell * 0.9
        xy.append(arrow_segments(base, v))
    return Overlay("velocity field", "velocity field", "lines", xy=np.stack(xy))


def x0_hat_overlay(source: ScoreSource, traj: Trajectory) -> Overlay:
    """Tweedie's x0_hat of the first particles at every frame (noising frames computed here)."""
    m = min(traj.paths.shape[1], X0_HAT_SHOWN)
    x0h = traj.x0_hat[:, :m].copy()
    with torch.inference_mode():
        for k in range(traj.n_forward):
            t = float(traj.times[k])
            x = torch.as_tensor(traj.paths[k, :m])
            if t > 0:
                tb = batch_time(t, x)
                x0h[k] = tweedie_x0(x, source.score_fn(x, tb), tb, source.sde).numpy()
            else:
                x0h[k] = traj.paths[k, :m]
    return Overlay("x0_hat (denoised estimate)", "x0_hat", "markers", xy=x0h)


def warped_grid(spec: RunSpec, source: ScoreSource, traj: Trajectory, bounds: tuple[float, float]) -> Overlay:
    """The flow map: a square grid carried by the probability-flow ODE (forward, then reverse).

    Forward frames carry a grid drawn over the data; generation frames carry a grid drawn over the
    prior through the deterministic probability-flow ODE of the same score on the run's grid.
    """
    sde = source.sde
    lines = grid_lines(bounds, 11, 30)
    ok = ~np.isnan(lines[:, 0])
    out = np.full((traj.paths.shape[0], lines.shape[0], 2), np.nan, dtype=np.float32)
    x = torch.tensor(lines[ok])
    with torch.inference_mode():
        t_prev = 0.0
        for k, t in enumerate(traj.times[: traj.n_forward]):
            n_sub = max(1, int(math.ceil((t - t_prev) / 0.01)))
            h = (t - t_prev) / n_sub
            for j in range(n_sub):
                x = x + h * velocity(source, x, max(t_prev + j * h, sde.t_min), reverse=False)
            t_prev = t
            out[k, ok] = x.numpy()
        half = 3.0 * sde.prior_std()
        y = torch.tensor(grid_lines((-half, half), 11, 30)[ok])
        frames = [y]
        sample_ode_euler(
            source.score_fn,
            sde,
            y,
            torch.as_tensor(traj.ts, dtype=torch.float64),
            final_denoise=spec.final_denoise,
            callback=lambda step: frames.append(step["x"]),
        )
    rev = torch.stack(frames).numpy()
    n_rev = min(rev.shape[0], out.shape[0] - traj.n_forward)
    out[traj.n_forward : traj.n_forward + n_rev, ok] = rev[:n_rev]
    if traj.n_forward + n_rev < out.shape[0]:  # a diverged sampler stopped early
        out[traj.n_forward + n_rev :, ok] = rev[n_rev - 1]
    return Overlay("warped grid (flow map)", "warped grid", "lines", xy=out)


def geodesic_overlay(traj: Trajectory) -> Overlay:
    """The W2 geodesic (McCann interpolation) from data to noise at s = t / T per frame."""
    if traj.data is None:
        raise ValueError("needs a run that starts from data")
    m = min(traj.data.shape[0], GEODESIC_PARTICLES)
    t_max = float(max(traj.times.max(), 1e-9))
    path, length = metrics.mccann_geodesic(traj.data[:m], traj.noise[:m], np.clip(traj.times / t_max, 0, 1))
    return Overlay(
        f"W2 geodesic (McCann, length {length:.2f})",
        "W2 geodesic",
        "markers",
        xy=np.asarray(path, np.float32),
    )


# --------------------------------------------------------------------------- numbers along the path
def exact_marginal_sample(density: Density, sde: SDE, t: float, m: int, g: torch.Generator) -> np.ndarray:
    """``m`` fresh samples of the exact marginal p_t (float64): data pushed through the kernel."""
    x0 = density.sample(m, g).float()
    if t <= 0:
        return x0.numpy().astype(np.float64)
    return sde.marginal_sample(x0, t, g).numpy().astype(np.float64)


def path_metrics(spec: RunSpec, sde: SDE, density: Density, traj: Trajectory) -> dict:
    """W2 to the exact path, free energy KL(mu_t || pi) and W2 to the data, with floors.

    Exact W2 (POT) on ``METRIC_PARTICLES`` particles at up to ``METRIC_FRAMES`` frames; the floor is
    the same distance between two independent exact samples of that size. Free energy (VP only,
    KL to N(0, I)): the k-NN estimate on the particles and, for mixtures, the exact value.

    Returns:
        columns ``frame, phase, t, w2_exact, w2_floor, free_energy, free_energy_exact`` (lists) and
        ``w2_data, w2_data_floor, n_eval``.
    """
    m = min(METRIC_PARTICLES, traj.paths.shape[1])
    g_a, g_b = generator(spec.seed, 21), generator(spec.seed, 22)
    pick = np.unique(np.linspace(0, traj.paths.shape[0] - 1, METRIC_FRAMES).round().astype(int))
    keys = ("frame", "phase", "t", "w2_exact", "w2_floor", "free_energy", "free_energy_exact")
    out: dict[str, list] = {k: [] for k in keys}
    vp = sde.name == "vp"
    for f in pick:
        t = float(traj.times[f])
        x = traj.paths[f, :m].astype(np.float64)
        if not np.all(np.isfinite(x)):
            continue
        ex_a = exact_marginal_sample(density, sde, t, m, g_a)
        ex_b = exact_marginal_sample(density, sde, t, m, g_b)
        out["frame"].append(int(f))
        out["phase"].append(traj.phase[f])
        out["t"].append(t)
        out["w2_exact"].append(metrics.exact_w2(x, ex_a))
        out["w2_floor"].append(metrics.exact_w2(ex_a, ex_b))
        try:
            out["free_energy"].append(wgf.free_energy_particles(x) if vp else float("nan"))
        except ValueError:  # duplicate particles (a collapsed sample) have no k-NN entropy
            out["free_energy"].append(float("nan"))
    if vp and isinstance(density, GaussianMixture) and out["t"]:
        out["free_energy_exact"] = [
            float(v) for v in wgf.free_energy_exact(density, np.asarray(out["t"]), sde)
        ]
    else:
        out["free_energy_exact"] = [float("nan")] * len(out["t"])
    final = traj.paths[-1, :m].astype(np.float64)
    data_a = density.sample(m, generator(spec.seed, 23)).numpy().astype(np.float64)
    data_b = density.sample(m, generator(spec.seed, 24)).numpy().astype(np.float64)
    ok = bool(np.all(np.isfinite(final))) and not traj.error
    return {
        **out,
        "w2_data": metrics.exact_w2(final, data_a) if ok else float("nan"),
        "w2_data_floor": metrics.exact_w2(data_a, data_b),
        "n_eval": m,
    }


def frame_agreement(
    spec: RunSpec,
    sde: SDE,
    density: Density,
    traj: Trajectory,
    jko_xy: np.ndarray | None = None,
    m: int = AGREEMENT_PARTICLES,
) -> dict:
    """At every frame: W2 of the particles to the exact marginal p_t and to the JKO path, with the floor.

    Exact W2 (POT ``emd2``) on the first ``m`` particles (i.i.d. draws: a random subsample). The
    exact sample of p_t is ``alpha(t) x_0 + sigma(t) z`` for one fixed data sample x_0 and noise z
    (a true sample at every t, the same draw across frames so the curve is smooth); the floor is W2
    between two independent such samples of the same size: what a perfect sampler would measure.
    The free energy ``KL(mu_t || pi)`` (VP only) is the k-NN estimate on all recorded particles per
    frame and, for mixtures, the exact value at up to ``METRIC_FRAMES`` times.

    Args:
        jko_xy: the JKO overlay's particles (F, k, 2), or None (``w2_jko`` is then NaN).

    Returns:
        ``t, w2_exact, w2_jko, w2_floor, free_energy`` (F,) float64 lists, ``fe_exact_t`` and
        ``fe_exact`` (the exact free energy's times and values; empty without a mixture), ``n_eval``.
    """
    n_f = traj.paths.shape[0]
    m = min(m, traj.paths.shape[1])
    x0a = density.sample(m, generator(spec.seed, 26)).float()
    x0b = density.sample(m, generator(spec.seed, 27)).float()
    za = torch.randn(x0a.shape, generator=generator(spec.seed, 28))
    zb = torch.randn(x0b.shape, generator=generator(spec.seed, 29))
    nan = float("nan")
    out: dict[str, list] = {k: [] for k in ("t", "w2_exact", "w2_jko", "w2_floor", "free_energy")}
    vp = sde.name == "vp"
    for f in range(n_f):
        t = float(np.clip(traj.times[f], 0.0, sde.T))
        ex_a = (sde.marginal_sample(x0a, t, noise=za) if t > 0 else x0a).numpy().astype(np.float64)
        ex_b = (sde.marginal_sample(x0b, t, noise=zb) if t > 0 else x0b).numpy().astype(np.float64)
        x = traj.paths[f].astype(np.float64)
        ok = bool(np.all(np.isfinite(x)))
        out["t"].append(t)
        out["w2_floor"].append(metrics.exact_w2(ex_a, ex_b))
        out["w2_exact"].append(metrics.exact_w2(x[:m], ex_a) if ok else nan)
        jko_ok = ok and jko_xy is not None and jko_xy.shape[1] >= 2
        out["w2_jko"].append(metrics.exact_w2(x[:m], jko_xy[f, :m]) if jko_ok else nan)  # type: ignore[index]
        fe = nan
        if vp and ok:
            try:
                fe = wgf.free_energy_particles(x)
            except ValueError:  # duplicate particles (a collapsed sample) have no k-NN entropy
                pass
        out["free_energy"].append(fe)
    fe_t: list[float] = []
    fe_exact: list[float] = []
    if vp and isinstance(density, GaussianMixture):
        fe_t = np.linspace(0.0, sde.T, METRIC_FRAMES).tolist()
        fe_exact = [float(v) for v in wgf.free_energy_exact(density, np.asarray(fe_t), sde)]
    return {**out, "fe_exact_t": fe_t, "fe_exact": fe_exact, "n_eval": m}


@functools.lru_cache(maxsize=32)
def _quality_floors(density: Density, seed: int, m: int) -> tuple[np.ndarray, float, float]:
    """The reference sample of :func:`final_quality` and its floors, which depend only on
    (density, seed, m): computed once, not for every sampler, step count and projection setting."""
    data_a = density.sample(m, generator(seed, 31)).numpy()
    data_b = density.sample(m, generator(seed, 32)).numpy()
    kl_floor = float("nan")
    if isinstance(density, GaussianMixture):
        try:
            kl_floor = metrics.kl_knn(data_a, density.log_prob)
        except ValueError:
            pass
    data_a.setflags(write=False)
    return data_a, metrics.exact_w2(data_a, data_b), kl_floor


def final_quality(spec: RunSpec, density: Density, final: np.ndarray, diverged: bool) -> dict:
    """KL (k-NN, mixtures) and exact W2 to data of final 2-D samples, with their floors."""
    m = final.shape[0]
    data_a, w2_floor, kl_floor = _quality_floors(density, spec.seed, m)
    out = {"w2": float("nan"), "w2_floor": w2_floor, "kl": float("nan"), "kl_floor": float("nan")}
    if diverged or not np.all(np.isfinite(final)):
        return out
    out["w2"] = metrics.exact_w2(final.astype(np.float64), data_a)
    if isinstance(density, GaussianMixture):
        try:
            out["kl"] = metrics.kl_knn(final, density.log_prob)
            out["kl_floor"] = kl_floor
        except ValueError:
            pass
    return out
