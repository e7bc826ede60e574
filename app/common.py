"""Shared code of the app's pages: settings in the URL, model loading, cached trajectories, exports.

Every page is ``controls() -> Settings`` (a frozen dataclass), a cached ``compute(settings)`` that
calls geoflow, and ``render(result)``. Models are loaded once per process with
``st.cache_resource`` (read-only, shared by all sessions); trajectories are cached with
``st.cache_data`` keyed by the settings, so toggling projection or changing the step count re-samples
the *same* initial noise (fixed by the seed) without retraining anything.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from geoflow import figures  # noqa: E402
from geoflow.checkpoints import CheckpointError, load_pretrained, read_manifest  # noqa: E402
from geoflow.densities import DENSITY_NAMES, Density, GaussianMixture, get_density  # noqa: E402
from geoflow.samplers import SAMPLERS, SamplerDiverged, get_sampler, sampler_names  # noqa: E402
from geoflow.score import batch_time  # noqa: E402
from geoflow.sde import SDE, SDE_NAMES, make_sde  # noqa: E402

torch.set_num_threads(1)  # many sessions share a small CPU; one thread each keeps them fair

MAX_PARTICLES = 2000
MAX_STEPS = 200
FWD_STEPS = 200  # forward noising is simulated on this fixed grid, so x_T never depends on N
SCORE_SOURCES = ("auto", "exact", "pretrained", "session")
PROJECTED_PREFIX = "predict_project"  # every predict-project variant takes project= and strength=
USER_PREFIX = "mine: "


# --------------------------------------------------------------------------- URL settings
def _cast(value: str, default: Any) -> Any:
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(float(value))
    if isinstance(default, float):
        return float(value)
    return value


def url_state(
    key: str, default: Any, valid: Sequence[Any] | None = None, lo: Any = None, hi: Any = None
) -> str:
    """Seed ``st.session_state[key]`` from ``st.query_params`` once, validated; returns the key.

    A bad value in a shared link falls back to the default (with a toast) instead of crashing.
    """
    st.session_state.setdefault("_url_keys", set()).add(key)  # per session: synced at the end of the run
    jump = st.session_state.pop(f"goto_{key}", None)  # set by another page's "open it on ..." button
    if jump is not None:
        st.session_state[key] = jump
        return key
    if key not in st.session_state:
        value = default
        raw = st.query_params.get(key)
        if raw is not None:
            try:
                value = _cast(raw, default)
                if valid is not None and value not in valid:
                    raise ValueError
                if lo is not None and value < lo:
                    value = lo
                if hi is not None and value > hi:
                    value = hi
            except (ValueError, TypeError):
                st.toast(f"ignored bad URL setting {key}={raw!r}")
                value = default
        st.session_state[key] = value
    return key


def sync_url() -> None:
    """Write this run's URL-backed settings into ``st.query_params``: the link reproduces the view."""
    keys = st.session_state.get("_url_keys", set())
    for key in sorted(keys):
        v = st.session_state.get(key)
        if isinstance(v, (bool, int, float, str)) and st.query_params.get(key) != str(v):
            st.query_params[key] = str(v)
    keys.clear()


# --------------------------------------------------------------------------- densities and models
def user_densities() -> dict[str, Density]:
    """This session's own densities (drawn, uploaded, generated), by display name."""
    return st.session_state.setdefault("user_densities", {})


def user_models() -> dict[str, dict]:
    """This session's trained models: ``{density name: {"model", "projection", "id", "summary"}}``."""
    return st.session_state.setdefault("user_models", {})


def density_choices() -> list[str]:
    return list(DENSITY_NAMES) + [USER_PREFIX + k for k in user_densities()]


@st.cache_resource(show_spinner=False)
def preset_density(name: str) -> Density:
    """A preset density (shared, read-only)."""
    return get_density(name)


def density_key(name: str) -> str:
    """A cache key for a density: presets by name, a session's own density by name and a unique id.

    Caches are shared by every session; two sessions may both call their data "my_data".
    """
    if not name.startswith(USER_PREFIX):
        return name
    dens = resolve_density(name)
    return f"{name}@{getattr(dens, 'uid', id(dens))}"


def resolve_density(name: str) -> Density:
    if name.startswith(USER_PREFIX):
        dens = user_densities().get(name[len(USER_PREFIX) :])
        if dens is None:
            raise ValueError(f"{name!r} is not in this session (make it on the Train your own page)")
        return dens
    return preset_density(name)


@st.cache_resource(show_spinner="loading model ...")
def pretrained_model(name: str) -> torch.nn.Module:
    """A shipped model, loaded once per process, eval mode, frozen (shared by all sessions)."""
    return load_pretrained(name)


@st.cache_resource(show_spinner="loading model ...")
def pretrained_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """A shipped score network and its projection network, if one is shipped and matches it."""
    model = pretrained_model(name)
    if not pretrained_available(name + "-proj"):
        return model, None
    try:
        proj = pretrained_model(name + "-proj")
        proj.check_matches(model, name)
    except (CheckpointError, ValueError):
        return model, None
    return model, proj


def pretrained_available(name: str) -> bool:
    try:
        return name in read_manifest()
    except (OSError, ValueError):
        return False


@dataclass
class ScoreSource:
    """The score in use: a callable, its SDE, a projection model if any, and a cache key."""

    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    sde: SDE
    key: str
    label: str
    projection_model: Any = None
    exact: bool = False


def score_source(density_name: str, sde_name: str, source: str) -> ScoreSource:
    """Pick the score for a density: exact (mixtures), pretrained (VP), or this session's model.

    Raises:
        ValueError: with what is available when the requested source does not exist.
    """
    if source not in SCORE_SOURCES:
        raise ValueError(f"unknown score source {source!r}; valid: {', '.join(SCORE_SOURCES)}")
    dens = resolve_density(density_name)
    sde = make_sde(sde_name)
    bare = density_name[len(USER_PREFIX) :] if density_name.startswith(USER_PREFIX) else density_name
    mine = user_models().get(bare) if density_name.startswith(USER_PREFIX) else None
    pre = f"{density_name}-vp"
    order = [source] if source != "auto" else ["session", "pretrained", "exact"]
    for src in order:
        if src == "session" and mine is not None:
            model = mine["model"]
            if model.sde.config() != sde.config():
                if source == "session":
                    raise ValueError(f"your model for {bare!r} was trained for the {model.sde.name} SDE")
                continue
            return ScoreSource(
                model.score_fn(),
                model.sde,
                f"session:{mine['id']}",
                "your trained model",
                mine.get("projection"),
            )
        if src == "pretrained" and sde_name == "vp" and pretrained_available(pre):
            model, proj = pretrained_pair(pre)
            return ScoreSource(model.score_fn(), model.sde, f"pretrained:{pre}", f"pretrained {pre}", proj)
        if src == "exact" and isinstance(dens, GaussianMixture):
            return ScoreSource(
                dens.score_fn(sde),
                sde,
                f"exact:{density_key(density_name)}:{sde_name}",
                "exact score",
                exact=True,
            )
    have = []
    if isinstance(dens, GaussianMixture):
        have.append("exact")
    if sde_name == "vp" and pretrained_available(pre):
        have.append("pretrained")
    if mine is not None:
        have.append("session")
    raise ValueError(
        f"no {source if source != 'auto' else ''} score for {density_name!r} with the "
        f"{sde_name.upper()} SDE; "
        f"available: {', '.join(have) or 'none'}. Pretrained models are VP only; train your own "
        "(any SDE) on the Train your own page."
    )


# --------------------------------------------------------------------------- trajectories
@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a flow trajectory (the cache key, with the score's key)."""

    density: str = "eight_gaussians"
    source: str = "auto"
    sde: str = "vp"
    sampler: str = "euler_maruyama"
    steps: int = 50
    spacing: str = "default"
    projection: bool = False
    proj_kind: str = "tweedie"
    strength: float = 1.0
    final_denoise: bool = True
    seed: int = 0
    n: int = 1000

    def validate(self) -> None:
        if not (1 <= self.steps <= MAX_STEPS):
            raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {self.steps}")
        if not (2 <= self.n <= MAX_PARTICLES):
            raise ValueError(f"particles must be between 2 and {MAX_PARTICLES}, got {self.n}")
        if self.sde not in SDE_NAMES:
            raise ValueError(f"unknown SDE {self.sde!r}; valid: {', '.join(SDE_NAMES)}")
        if not (0.0 <= self.strength <= 1000.0):
            raise ValueError(f"projection strength must be in [0, 1000], got {self.strength}")

    @property
    def sampler_name(self) -> str:
        """The registered sampler actually run (projection on turns EM into predict-project)."""
        if self.projection and self.sampler == "euler_maruyama":
            return "predict_project"
        return self.sampler


@dataclass
class Trajectory:
    """Forward and reverse particle paths on one time axis (frames), float32."""

    paths: np.ndarray  # (F, n, 2)
    times: np.ndarray  # (F,) forward time t of each frame
    phase: list[str]  # "noising" / "generation" per frame
    labels: list[str]
    x0_hat: np.ndarray  # (F, n, 2): Tweedie's denoised estimate at each generation frame (NaN while noising)
    data: np.ndarray  # (n, 2) x_0 (start of noising)
    noise: np.ndarray  # (n, 2) x_T (start of generation)
    n_forward: int
    nfe: int
    sampler_label: str
    error: str = ""
    moves: dict[str, np.ndarray] = field(default_factory=dict)  # x_pred / x_proj per reverse step
    ts: np.ndarray | None = None  # the reverse grid


def generator(seed: int, stream: int = 0) -> torch.Generator:
    """A seeded generator per purpose (data, forward noise, sampler), so streams never mix."""
    return torch.Generator().manual_seed(int(seed) * 1009 + stream)


def forward_path(x0: torch.Tensor, sde: SDE, n_steps: int, g: torch.Generator) -> torch.Tensor:
    """Simulate the forward SDE (method.md eq. 1) by Euler-Maruyama from data on a uniform grid.

    Particles keep their identity: row k is the same particle at every time (no independent
    redraws, unlike tiny-diffusion's forward frames).

    Returns:
        (n_steps + 1, n, 2) positions at t_k = k T / n_steps.
    """
    dt = sde.T / n_steps
    x = x0.clone()
    out = [x]
    for k in range(n_steps):
        t = k * dt
        z = torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = x + sde.drift(x, t) * dt + float(sde.diffusion(t)) * math.sqrt(dt) * z
        out.append(x)
    return torch.stack(out)


@st.cache_data(max_entries=16, show_spinner=False)
def noising(
    density_name: str, key: str, sde_json: str, seed: int, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Data x_0 and its simulated forward path (cached by ``key``: a toggle or step change reuses it)."""
    from geoflow.sde import sde_from_config

    x0 = resolve_density(density_name).sample(n, generator(seed, 0))
    return x0, forward_path(x0, sde_from_config(json.loads(sde_json)), FWD_STEPS, generator(seed, 1))


def reverse_grid(spec: RunSpec, sde: SDE) -> torch.Tensor:
    info = get_sampler(spec.sampler_name)
    spacing = info.spacing if spec.spacing == "default" else spec.spacing
    return sde.time_grid(spec.steps, spacing)  # type: ignore[arg-type]


def _projection_hook(spec: RunSpec, src: ScoreSource, density: Density) -> Any:
    from geoflow.projection import make_projection

    kind = spec.proj_kind
    if kind == "learned" and src.projection_model is None:
        raise ValueError("no learned projection network for this score model; use tweedie or exact")
    if kind == "exact":
        if not isinstance(density, GaussianMixture):
            raise ValueError("the exact projection needs a Gaussian mixture density; use tweedie")
        return make_projection("exact", score_fn=density.score_fn(src.sde), sde=src.sde)
    return make_projection(kind, score_fn=src.score_fn, sde=src.sde, model=src.projection_model)


def run_sampler(
    spec: RunSpec, src: ScoreSource, density: Density, x_T: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[float], int, dict[str, list[torch.Tensor]], str]:
    """Run the chosen sampler from ``x_T`` and collect every step through its callback.

    Returns:
        positions (N + 1 tensors), x0_hat per frame, times, NFE, the predict/project moves, and an
        error message ('' if the run finished; a diverged run returns what it reached).
    """
    sde = src.sde
    ts = reverse_grid(spec, sde)
    xs, x0s, times = [x_T], [], [float(ts[0])]
    moves: dict[str, list[torch.Tensor]] = {"x_pred": [], "x_proj": []}
    nfe = [0]

    def cb(info: dict) -> None:
        xs.append(info["x"].detach().clone())
        x0s.append(info["x0_hat"].detach().clone())
        times.append(info["t"])
        nfe[0] = info["nfe"]
        if "x_pred" in info:
            moves["x_pred"].append(info["x_pred"].detach().clone())
            moves["x_proj"].append(info["x_proj"].detach().clone())

    kwargs: dict[str, Any] = {
        "final_denoise": spec.final_denoise,
        "callback": cb,
        "generator": generator(spec.seed, 2),
    }
    if spec.sampler_name.startswith(PROJECTED_PREFIX):
        kwargs["project"] = _projection_hook(spec, src, density)
        kwargs["strength"] = spec.strength
    info = get_sampler(spec.sampler_name)
    error = ""
    try:
        fn_kwargs = dict(info.kwargs)
        fn_kwargs.update(kwargs)
        info.fn(src.score_fn, sde, x_T, ts, **fn_kwargs)
    except SamplerDiverged as e:
        error = f"{e}. Try more steps, a smaller projection strength, or another sampler."
    x0s.append(xs[-1])  # at the last frame the sample is its own estimate
    return xs, x0s[: len(xs)], times, nfe[0], moves, error


@st.cache_data(max_entries=48, show_spinner="sampling ...")
def trajectory(spec: RunSpec, src_key: str, _src: ScoreSource) -> Trajectory:
    """Cached :func:`compute_trajectory` (keyed by the settings and the score's key)."""
    return compute_trajectory(spec, _src)


def compute_trajectory(spec: RunSpec, _src: ScoreSource) -> Trajectory:
    """Forward noising from data, then generation from its end point x_T, for one settings tuple.

    The data, the forward noise and hence x_T depend only on (density, SDE, seed, n): every sampler,
    step count and projection setting starts from the same initial noise.
    """
    spec.validate()
    density = resolve_density(spec.density)
    sde = _src.sde
    x0, fwd = noising(
        spec.density, density_key(spec.density), json.dumps(sde.config(), sort_keys=True), spec.seed, spec.n
    )
    x_T = fwd[-1].clone()
    xs, x0s, times, nfe, moves, error = run_sampler(spec, _src, density, x_T)
    # forward frames at the times the reverse run visits (mirror image), nearest fine-grid step
    rev_t = np.asarray(times, dtype=np.float64)
    fwd_idx = np.unique(np.clip(np.round(rev_t[::-1] / sde.T * FWD_STEPS).astype(int), 0, FWD_STEPS))
    fwd_t = fwd_idx * sde.T / FWD_STEPS
    fwd_x = fwd[torch.as_tensor(fwd_idx)]
    paths = torch.cat([fwd_x, torch.stack(xs)]).numpy().astype(np.float32)
    # the noising frames' x0_hat costs one score call per frame: computed only for the x0_hat overlay
    x0h = np.concatenate(
        [np.full(fwd_x.shape, np.nan, np.float32), torch.stack(x0s).numpy().astype(np.float32)]
    )
    all_t = np.concatenate([fwd_t, rev_t])
    phase = ["noising"] * len(fwd_t) + ["generation"] * len(rev_t)
    labels = [f"{p} t={t:.3f}" for p, t in zip(phase, all_t, strict=True)]
    label = SAMPLERS[spec.sampler_name].label if spec.sampler_name in SAMPLERS else spec.sampler_name
    return Trajectory(
        paths=paths,
        times=all_t,
        phase=phase,
        labels=labels,
        x0_hat=x0h,
        data=x0.numpy(),
        noise=x_T.numpy(),
        n_forward=len(fwd_t),
        nfe=nfe,
        sampler_label=label,
        error=error,
        moves={k: torch.stack(v).numpy() for k, v in moves.items() if v},
        ts=reverse_grid(spec, sde).numpy(),
    )


def _x0_hat(src: ScoreSource, x: torch.Tensor, t: float) -> torch.Tensor:
    from geoflow.score import tweedie_x0

    tb = batch_time(t, x)
    return tweedie_x0(x, src.score_fn(x, tb), tb, src.sde)


def flow_figure(
    spec: RunSpec,
    src: ScoreSource,
    traj: Trajectory,
    layers: Sequence[figures.Layer] = (),
    color_by_noise: bool = False,
    frame: int = 0,
) -> figures.AnimatedFigure:
    """The Flows page's animated figure of a trajectory (particles coloured by x_0 or by x_T)."""
    density = resolve_density(spec.density)
    colors = figures.position_colors(traj.noise if color_by_noise else traj.data)
    title = f"{density.name}: {traj.sampler_label}, N={spec.steps}, NFE={traj.nfe} ({src.label})"
    return figures.particle_animation(
        traj.paths,
        traj.labels,
        colors=colors,
        layers=layers,
        bounds=plot_bounds(density, src.sde),
        title=title,
        start_frame=frame,
        uirevision=f"flows-{spec.density}-{spec.sde}",
    )


# --------------------------------------------------------------------------- overlays
def velocity(src: ScoreSource, x: torch.Tensor, t: float, reverse: bool) -> torch.Tensor:
    """Probability-flow velocity at forward time t (Theorem 1: ``-beta (grad log mu_t + x)`` for VP).

    ``dx/dt = f - g^2/2 s`` forward; generation moves along its negative in tau = T - t
    (Theorem 2 without the noise split).
    """
    tb = batch_time(t, x)
    s = src.score_fn(x, tb)
    v = src.sde.drift(x, t) - 0.5 * float(src.sde.diffusion(t)) ** 2 * s
    return -v if reverse else v


@st.cache_data(max_entries=32, show_spinner="overlays ...")
def overlay_layers(
    spec: RunSpec, src_key: str, which: tuple[str, ...], _src: ScoreSource, _traj: Trajectory
) -> tuple[list[figures.Layer], list[str]]:
    """The overlays named in ``which`` for a trajectory, and messages for the ones unavailable."""
    from geoflow import wgf

    density = resolve_density(spec.density)
    sde = _src.sde
    bounds = plot_bounds(density, sde)
    traj = _traj
    n_f = traj.paths.shape[0]
    layers: list[figures.Layer] = []
    notes: list[str] = []
    rev = np.array([p == "generation" for p in traj.phase])
    if "exact marginal" in which:
        if isinstance(density, GaussianMixture):
            grids = [wgf.marginal_density_grid(density, sde, float(t), bounds, 44) for t in traj.times]
            z = np.stack([gr.P for gr in grids])
            layers.append(
                figures.Layer(
                    "exact marginal p_t",
                    "contour",
                    z=z,
                    grid=grids[0].X[0],
                    style={"colorscale": "Greys", "opacity": 0.6},
                )
            )
        else:
            # no closed form: fresh exact marginal samples alpha(t) x0' + sigma(t) z
            m = min(spec.n, 600)
            x0 = density.sample(m, generator(spec.seed, 7))
            z = torch.randn(x0.shape, generator=generator(spec.seed, 8))
            xy = np.stack(
                [
                    (float(sde.alpha(t)) * x0 + float(sde.sigma(t)) * z).numpy() if t > 0 else x0.numpy()
                    for t in traj.times
                ]
            )
            layers.append(
                figures.Layer(
                    "exact marginal (samples)",
                    "markers",
                    xy=xy,
                    style={"marker": {"color": "rgba(90,90,90,0.35)", "size": 4}},
                )
            )
    if "JKO path" in which:
        jko, msg = jko_overlay(spec, _src, traj)
        if jko is not None:
            layers.append(jko)
        if msg:
            notes.append(msg)
    if "velocity field" in which:
        cell = (bounds[1] - bounds[0]) / 13
        xy = []
        for t, r in zip(traj.times, rev, strict=True):
            kind = "reverse_ode" if r else "forward"
            vf = wgf.velocity_field(_src.score_fn, sde, float(max(t, sde.t_min)), bounds, 13, kind)
            base = np.stack([vf.X.ravel(), vf.Y.ravel()], 1)
            v = np.stack([vf.U.ravel(), vf.V.ravel()], 1)
            # scaled per frame so the longest arrow is one grid cell: direction and relative speed
            v = v / max(float(np.linalg.norm(v, axis=1).max()), 1e-9) * cell * 0.9
            xy.append(figures.arrow_segments(base, v))
        layers.append(
            figures.Layer(
                "velocity field",
                "lines",
                xy=np.stack(xy),
                style={"line": {"color": "rgba(200,40,40,0.7)", "width": 1.5}},
            )
        )
    if "x0_hat" in which:
        m = min(traj.paths.shape[1], 300)
        x0h = traj.x0_hat[:, :m].copy()
        with torch.no_grad():
            for k in range(traj.n_forward):
                t = float(traj.times[k])
                x = torch.as_tensor(traj.paths[k, :m])
                x0h[k] = _x0_hat(_src, x, t).numpy() if t > 0 else traj.paths[k, :m]
        layers.append(
            figures.Layer(
                "x0_hat (denoised estimate)",
                "markers",
                xy=x0h,
                style={"marker": {"color": "rgba(0,0,0,0.55)", "size": 4, "symbol": "x"}},
            )
        )
    if "warped grid" in which:
        layers.append(warped_grid(spec, _src, traj, bounds))
    if "W2 geodesic" in which:
        geo, msg = geodesic_overlay(traj)
        if geo is not None:
            layers.append(geo)
        if msg:
            notes.append(msg)
    for layer in layers:
        assert layer.n_frames == n_f
    return layers, notes


def warped_grid(
    spec: RunSpec, src: ScoreSource, traj: Trajectory, bounds: tuple[float, float]
) -> figures.Layer:
    """The flow map: a square grid carried by the probability-flow ODE (forward, then reverse).

    Forward frames carry a grid drawn over the data; generation frames carry a grid drawn over the
    prior through the deterministic probability-flow ODE of the same score (the flow map that the
    sampler's noise blurs).
    """
    from geoflow.samplers import sample_ode_euler

    sde = src.sde
    lines = figures.grid_lines(bounds, 11, 30)
    ok = ~np.isnan(lines[:, 0])
    out = np.full((traj.paths.shape[0], lines.shape[0], 2), np.nan, dtype=np.float32)
    x = torch.tensor(lines[ok])
    fwd_t = traj.times[: traj.n_forward]
    with torch.no_grad():
        t_prev = 0.0
        for k, t in enumerate(fwd_t):
            # Euler sub-steps of dx/dt = f - g^2/2 s between frame times
            n_sub = max(1, int(math.ceil((t - t_prev) / 0.01)))
            h = (t - t_prev) / n_sub
            for j in range(n_sub):
                tt = max(t_prev + j * h, sde.t_min)
                x = x + h * velocity(src, x, tt, reverse=False)
            t_prev = t
            out[k, ok] = x.numpy()
        prior_half = 3.0 * sde.prior_std()
        y = torch.tensor(figures.grid_lines((-prior_half, prior_half), 11, 30)[ok])
        ts = torch.as_tensor(traj.ts, dtype=torch.float64)
        frames = [y]
        sample_ode_euler(
            src.score_fn,
            sde,
            y,
            ts,
            final_denoise=spec.final_denoise,
            callback=lambda i: frames.append(i["x"]),
        )
    rev = torch.stack(frames).numpy()
    out[traj.n_forward : traj.n_forward + rev.shape[0], ok] = rev
    if traj.n_forward + rev.shape[0] < out.shape[0]:  # a diverged sampler stopped early
        out[traj.n_forward + rev.shape[0] :, ok] = rev[-1]
    return figures.Layer(
        "warped grid (flow map)",
        "lines",
        xy=out,
        style={"line": {"color": "rgba(60,90,200,0.45)", "width": 1}},
    )


def jko_overlay(spec: RunSpec, src: ScoreSource, traj: Trajectory) -> tuple[figures.Layer | None, str]:
    """JKO particles of KL(. || pi) (geoflow.wgf.jko_path) at the keyframe nearest each frame's t."""
    if src.sde.name != "vp":
        return None, "JKO path: computed for the VP SDE only (its time change s = int beta)."
    try:
        kf_t, kf_x = _jko_path(spec.density, density_key(spec.density), spec.seed, min(spec.n, JKO_PARTICLES))
    except (ValueError, RuntimeError) as e:
        return None, f"JKO path unavailable: {e}"
    idx = np.abs(traj.times[:, None] - kf_t[None, :]).argmin(1)
    return (
        figures.Layer(
            f"JKO path ({len(kf_t)} keyframes, nearest shown)",
            "markers",
            xy=kf_x[idx],
            style={"marker": {"color": "rgba(20,140,60,0.55)", "size": 5, "symbol": "diamond"}},
        ),
        "",
    )


JKO_PARTICLES = 300
JKO_H = 0.25
JKO_KEYFRAMES = 21


@st.cache_data(max_entries=16, show_spinner="JKO scheme (once per density and seed) ...")
def _jko_path(density_name: str, key: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The JKO path's keyframe times and particles (at most ``JKO_SHOWN`` of them drawn).

    Presets use ``wgf.preset_jko_path`` (the mixtures are shipped precomputed, so instant); other
    densities run the scheme on ``n`` particles with a coarser step.
    """
    from geoflow import wgf
    from geoflow.densities import PRESETS

    if density_name in PRESETS and seed == 0:
        res = wgf.preset_jko_path(density_name)
    else:
        density = resolve_density(density_name)
        x0 = density.sample(n, generator(seed, 0)).numpy()
        res = wgf.jko_path(x0, make_sde("vp"), JKO_H, JKO_KEYFRAMES)
    return np.asarray(res.t, dtype=np.float64), np.asarray(res.particles[:, :JKO_SHOWN], dtype=np.float32)


JKO_SHOWN = 400


def geodesic_overlay(traj: Trajectory) -> tuple[figures.Layer | None, str]:
    """The W2 geodesic (McCann interpolation, geoflow.wgf) from data to noise at s = t / T per frame."""
    from geoflow import wgf

    m = min(traj.data.shape[0], 500)
    t_max = float(max(traj.times.max(), 1e-9))
    try:
        path, length = wgf.mccann_geodesic(traj.data[:m], traj.noise[:m], np.clip(traj.times / t_max, 0, 1))
    except (ValueError, RuntimeError) as e:
        return None, f"W2 geodesic unavailable: {e}"
    return (
        figures.Layer(
            f"W2 geodesic (McCann, length {length:.2f})",
            "markers",
            xy=np.asarray(path, dtype=np.float32),
            style={"marker": {"color": "rgba(230,120,0,0.6)", "size": 4, "symbol": "triangle-up"}},
        ),
        "",
    )


def plot_bounds(density: Density, sde: SDE) -> tuple[float, float]:
    lo, hi = density.bounds()
    r = max(abs(lo), abs(hi), 3.2 * sde.prior_std())
    return (-r, r)


# --------------------------------------------------------------------------- side numbers
@st.cache_data(max_entries=32, show_spinner="W2 and free energy along the path ...")
def path_metrics(
    spec: RunSpec, src_key: str, _src: ScoreSource, _traj: Trajectory, n_eval: int = 400
) -> dict:
    """W2 to the exact path, free energy KL(mu_t || pi) and W2 to the data, with floors.

    Exact W2 by POT on ``n_eval`` particles at up to 30 frames; the exact marginal at t is
    sampled as ``alpha(t) x0' + sigma(t) z`` from fresh data (exact for every density). The floor
    is the same distance between two independent exact samples of the same size. Free energy
    (VP only, KL to N(0, I)): ``geoflow.wgf.free_energy_particles`` (k-NN) on the particles and, for
    mixtures, ``free_energy_exact`` of the exact marginal.
    """
    from geoflow import wgf
    from geoflow.metrics import exact_w2

    density = resolve_density(spec.density)
    sde = _src.sde
    traj = _traj
    m = min(n_eval, traj.paths.shape[1])
    g_a, g_b = generator(spec.seed, 21), generator(spec.seed, 22)
    pick = np.unique(np.linspace(0, traj.paths.shape[0] - 1, 30).round().astype(int))
    keys = ("frame", "phase", "t", "w2_exact", "w2_floor", "free_energy", "free_energy_exact")
    out: dict[str, list] = {k: [] for k in keys}
    vp = sde.name == "vp"  # the free energy is KL to N(0, I), the VP prior
    for f in pick:
        t = float(traj.times[f])
        x = traj.paths[f, :m].astype(np.float64)
        if not np.all(np.isfinite(x)):
            continue
        ex_a = _exact_marginal_sample(density, sde, t, m, g_a)
        ex_b = _exact_marginal_sample(density, sde, t, m, g_b)
        out["frame"].append(int(f))
        out["phase"].append(traj.phase[f])
        out["t"].append(t)
        out["w2_exact"].append(exact_w2(x, ex_a))
        out["w2_floor"].append(exact_w2(ex_a, ex_b))
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
        "w2_data": exact_w2(final, data_a) if ok else float("nan"),
        "w2_data_floor": exact_w2(data_a, data_b),
        "n_eval": m,
    }


def _exact_marginal_sample(density: Density, sde: SDE, t: float, m: int, g: torch.Generator) -> np.ndarray:
    x0 = density.sample(m, g)
    if t <= 0:
        return x0.numpy().astype(np.float64)
    z = torch.randn(x0.shape, generator=g)
    return (float(sde.alpha(t)) * x0 + float(sde.sigma(t)) * z).numpy().astype(np.float64)


# --------------------------------------------------------------------------- exports
def export_panel(
    fig: Any, traj: Trajectory, frame: int, bounds: tuple[float, float], csv: bytes, key: str
) -> None:
    """Download buttons: PNG / SVG of a frame (kaleido), GIF / MP4 of the animation, CSV of numbers.

    Encoding a movie costs seconds, so each export is made on request (a button), then offered.
    """
    cols = st.columns(5)
    cols[4].download_button(
        "CSV of positions", csv, file_name=f"{key}.csv", mime="text/csv", key=f"{key}_csv"
    )
    store = st.session_state.setdefault("exports", {})
    for col, fmt in zip(cols[:4], ("png", "svg", "gif", "mp4"), strict=True):
        sk = f"{key}_{fmt}"
        if col.button(f"make {fmt.upper()}", key=f"{sk}_make", help="render this export in memory"):
            try:
                with st.spinner(f"rendering {fmt.upper()} ..."):
                    if fmt in ("png", "svg"):
                        store[sk] = figures.static_image(figures.still_figure(fig, frame), fmt)  # type: ignore[arg-type]
                    else:
                        every = max(1, traj.paths.shape[0] // 120)
                        imgs = figures.render_frames(
                            traj.paths, figures.position_colors(traj.noise), bounds, traj.labels, every=every
                        )
                        store[sk] = figures.gif_bytes(imgs) if fmt == "gif" else figures.mp4_bytes(imgs)
            except figures.ExportUnavailable as e:
                col.warning(str(e))
            except (OSError, RuntimeError, ValueError) as e:
                col.error(f"{fmt.upper()} export failed: {e}")
        if sk in store:
            mime = {"png": "image/png", "svg": "image/svg+xml", "gif": "image/gif", "mp4": "video/mp4"}[fmt]
            col.download_button(
                f"⬇ {fmt.upper()}", store[sk], file_name=f"{key}.{fmt}", mime=mime, key=f"{sk}_dl"
            )


def show_error(e: Exception, what: str = "") -> None:
    """A readable error box instead of a traceback."""
    prefix = f"{what}: " if what else ""
    st.error(f"{prefix}{e}")


def sampler_options() -> list[str]:
    return list(sampler_names())


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def settings_replace(s: Any, **kw: Any) -> Any:
    return replace(s, **kw)


# --------------------------------------------------------------------------- shared controls
SPACING_CHOICES = ("default", "uniform", "quadratic", "logsnr")


def run_controls(container: Any = None, projection_toggle: bool = True) -> RunSpec:
    """The sidebar controls of a 2-D run, seeded from the URL; returns a validated RunSpec."""
    c = container if container is not None else st.sidebar
    d = RunSpec()
    dens = density_choices()
    c.selectbox("density", dens, key=url_state("density", d.density, dens))
    c.selectbox(
        "score",
        SCORE_SOURCES,
        key=url_state("source", d.source, SCORE_SOURCES),
        help="auto: your model for your data, else the shipped pretrained model, else the exact "
        "mixture score",
    )
    c.radio("SDE", SDE_NAMES, horizontal=True, key=url_state("sde", d.sde, SDE_NAMES), format_func=str.upper)
    names = [n for n in sampler_options() if not n.startswith(PROJECTED_PREFIX)]
    c.selectbox(
        "sampler",
        names,
        key=url_state("sampler", d.sampler, names),
        format_func=lambda n: SAMPLERS[n].label if n in SAMPLERS else n,
    )
    c.slider(
        "steps N",
        1,
        MAX_STEPS,
        key=url_state("steps", d.steps, lo=1, hi=MAX_STEPS),
        help=f"at most {MAX_STEPS}",
    )
    c.selectbox(
        "time spacing",
        SPACING_CHOICES,
        key=url_state("spacing", d.spacing, SPACING_CHOICES),
        help="default: the sampler's own choice (uniform for EM, log-SNR for DDIM / DPM-Solver / Heun)",
    )
    proj = False
    kind, strength = d.proj_kind, d.strength
    if projection_toggle:
        proj = c.toggle(
            "projection step (predict-project)",
            key=url_state("projection", d.projection),
            help="turns Euler-Maruyama into the paper's predict-project sampler; other samplers ignore it",
        )
        kinds = ("tweedie", "learned", "exact")
        kind = c.selectbox(
            "projection T", kinds, key=url_state("proj_kind", d.proj_kind, kinds), disabled=not proj
        )
        strength = c.number_input(
            "projection strength dmu",
            0.0,
            1000.0,
            step=0.5,
            key=url_state("strength", float(default_strength()), lo=0.0, hi=1000.0),
            disabled=not proj,
        )
    c.toggle("final denoising step", key=url_state("final_denoise", d.final_denoise))
    c.number_input("seed", 0, 10_000, step=1, key=url_state("seed", d.seed, lo=0, hi=10_000))
    c.slider(
        "particles",
        50,
        MAX_PARTICLES,
        step=50,
        key=url_state("n", d.n, lo=50, hi=MAX_PARTICLES),
        help=f"at most {MAX_PARTICLES} (the animation sends every frame to the browser)",
    )
    ss = st.session_state
    return RunSpec(
        density=ss["density"],
        source=ss["source"],
        sde=ss["sde"],
        sampler=ss["sampler"],
        steps=int(ss["steps"]),
        spacing=ss["spacing"],
        projection=bool(proj),
        proj_kind=kind,
        strength=float(strength),
        final_denoise=bool(ss["final_denoise"]),
        seed=int(ss["seed"]),
        n=int(ss["n"]),
    )


def default_strength() -> float:
    try:
        from geoflow.projection import DEFAULT_STRENGTH

        return float(DEFAULT_STRENGTH)
    except ImportError:
        return 1.0


def prepare(spec: RunSpec) -> tuple[ScoreSource, Trajectory] | None:
    """Resolve the score and compute (cached) the trajectory; shows a readable error and returns None."""
    try:
        spec.validate()
        src = score_source(spec.density, spec.sde, spec.source)
        traj = trajectory(spec, src.key, src)
    except (ValueError, CheckpointError, RuntimeError) as e:
        show_error(e)
        return None
    return src, traj
