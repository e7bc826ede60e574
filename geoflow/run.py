"""The run API: ``RunSpec -> Trajectory``, the one path from settings to samples.

The app's pages, the CLI's ``sample`` and the benchmarks all call :func:`run`. A run is

1. the data: a 2-D density (a preset, or a :class:`~geoflow.densities.Density` the caller passes)
   or an image set;
2. the score: exact (mixtures), a shipped pretrained model, a checkpoint file, or a model the
   caller passes (:class:`ScoreSource`);
3. the start: ``"forward"`` simulates the forward SDE (method.md eq. 1) from data, particles keeping
   their identity, and generation starts from its end point x_T; ``"prior"`` draws x_T from the
   prior;
4. the sampler from ``geoflow.registry``, with its projection T and strength where it takes them,
   every step recorded through the sampler's callback.

Seeds: the data, the forward noise, the prior draw and the sampler's noise come from separate
streams of the one seed, so the same seed gives the same x_T and the same Brownian path across
N, sampler and projection changes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoflow.checkpoints import CheckpointError, load_model, load_pretrained, read_manifest
from geoflow.densities import DENSITY_NAMES, Density, GaussianMixture, get_density
from geoflow.images import IMAGE_SETS, image_shape
from geoflow.nets import net_config
from geoflow.projection import PROJECTION_KINDS, ProjectionModel, make_projection
from geoflow.registry import SamplerInfo, get_sampler, sampler_kwargs
from geoflow.samplers import Projection, SamplerDiverged
from geoflow.score import ScoreFn, ScoreModel
from geoflow.sde import SDE, SDE_NAMES, SPACINGS, make_sde
from geoflow.validate import LIMITS, check_exact_score, check_work, net_activation_floats

SCORE_CHOICES = ("auto", "exact", "pretrained", "session")  # or a pretrained name or a .safetensors file
PROJECTION_CHOICES = ("auto", *PROJECTION_KINDS)
STARTS = ("forward", "prior")
FWD_STEPS = 200  # the forward SDE is simulated on this fixed grid, so x_T never depends on N
# limits: defined once in geoflow.validate.LIMITS (quoted by --help and the UI)
MAX_STEPS = LIMITS.sample_steps
MAX_N = LIMITS.particles
MAX_SEED = LIMITS.seed
MAX_STRENGTH = LIMITS.strength
MAX_RECORD_BYTES = LIMITS.record_bytes  # recorded frames (positions, x0_hat, moves) of one run
# seed streams: one purpose each, so that streams never mix
STREAM_DATA, STREAM_FORWARD, STREAM_SAMPLER, STREAM_PRIOR, STREAM_PRIOR_SAMPLER = 0, 1, 2, 40, 41


def generator(seed: int, stream: int = 0) -> torch.Generator:
    """A seeded generator for one purpose (data, forward noise, sampler...) of a run's seed."""
    return torch.Generator().manual_seed(int(seed) * 1009 + stream)


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run (with the score source's key, the cache key).

    Attributes:
        data: a 2-D density name (a preset, or the name of a density passed to :func:`run`) or an
            image set (``digits``, ``shapes``).
        score: ``auto`` (a passed model, else pretrained, else exact), ``exact``, ``pretrained``,
            ``session`` (the model passed to :func:`run`), a pretrained name, or a ``.safetensors``.
        sde: ``vp`` or ``ve``.
        sampler: a registry name (``geoflow.registry.SAMPLER_NAMES``).
        steps: N.
        spacing: ``default`` (the sampler's) or a grid spacing.
        projection: the T of samplers that take one: ``auto`` (learned where a projection
            network exists, else tweedie, or exact for an exact score), ``learned``, ``tweedie``,
            ``exact``. Ignored by samplers that take no T.
        strength: projection strength; None is the sampler's registry default.
        final_denoise: end with Tweedie's x0_hat (method.md section 4).
        seed: one seed for every random stream of the run.
        n: particles (samples).
        start: ``forward`` (noise the data first, 2-D) or ``prior``.
        record: particles recorded per frame (the first ``record``); None records all, 0 none.
    """

    data: str = "eight_gaussians"
    score: str = "auto"
    sde: str = "vp"
    sampler: str = "euler_maruyama"
    steps: int = 50
    spacing: str = "default"
    projection: str = "auto"
    strength: float | None = None
    final_denoise: bool = True
    seed: int = 0
    n: int = 1000
    start: str = "forward"
    record: int | None = None

    @property
    def info(self) -> SamplerInfo:
        return get_sampler(self.sampler)

    @property
    def is_image(self) -> bool:
        return self.data in IMAGE_SETS

    def grid_spacing(self) -> str:
        """The time spacing actually used (the sampler's default unless overridden)."""
        return self.info.spacing if self.spacing == "default" else self.spacing

    def effective_strength(self) -> float | None:
        """The strength the sampler runs with (None: the sampler has none)."""
        info = self.info
        if not info.has_strength:
            return None
        return info.default_strength if self.strength is None else float(self.strength)

    def recorded(self) -> int:
        return self.n if self.record is None else min(self.record, self.n)

    def validate(self) -> None:
        """Check every field before any work; ``ValueError`` naming the field and the valid range."""
        get_sampler(self.sampler)
        if self.sde not in SDE_NAMES:
            raise ValueError(f"unknown SDE {self.sde!r}; valid: {', '.join(SDE_NAMES)}")
        if self.spacing != "default" and self.spacing not in SPACINGS:
            raise ValueError(f"unknown spacing {self.spacing!r}; valid: default, {', '.join(SPACINGS)}")
        if self.projection not in PROJECTION_CHOICES:
            raise ValueError(
                f"unknown projection {self.projection!r}; valid: {', '.join(PROJECTION_CHOICES)}"
            )
        if self.start not in STARTS:
            raise ValueError(f"unknown start {self.start!r}; valid: {', '.join(STARTS)}")
        _check_int("steps", self.steps, 1, MAX_STEPS)
        _check_int("n", self.n, 1, MAX_N)
        _check_int("seed", self.seed, 0, MAX_SEED)
        if self.record is not None:
            _check_int("record", self.record, 0, MAX_N)
        if self.strength is not None:
            s = self.strength
            if not (isinstance(s, int | float) and math.isfinite(s) and 0 <= s <= MAX_STRENGTH):
                raise ValueError(f"strength must be a finite number in [0, {MAX_STRENGTH:g}], got {s!r}")
            if not self.info.has_strength:
                raise ValueError(f"sampler {self.sampler!r} has no projection strength")
        if self.is_image and self.start != "prior":
            raise ValueError(f"image set {self.data!r} starts from the prior (start='prior')")
        need = self.record_bytes()
        if need > MAX_RECORD_BYTES:
            raise ValueError(
                f"this run would record {need / 2**20:.0f} MiB of frames (limit "
                f"{MAX_RECORD_BYTES / 2**20:.0f} MiB): fewer particles, steps or recorded particles"
            )

    def record_bytes(self) -> int:
        """Memory the recorded frames take (float32): positions and x0_hat per frame, moves per step."""
        dim = math.prod(image_shape(self.data)) if self.is_image else 2
        frames = self.steps + 1 + (FWD_STEPS + 1 if self.start == "forward" else 0)
        per_frame = 2 + (2 if self.info.family == "predict_project" else 0)
        return 4 * dim * self.recorded() * frames * per_frame + 4 * dim * self.n * 3


def _check_int(name: str, v: Any, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or not (lo <= int(v) <= hi):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")


# --------------------------------------------------------------------------- score sources
@dataclass(frozen=True)
class ScoreSource:
    """The score a run uses: a callable, its SDE, a cache key, and the models behind it.

    Attributes:
        score_fn: ``score(x, t)``, x (B, *D), t (B,).
        sde: the SDE the score is for.
        key: identity for caches (a pretrained name, a session id, ``exact:<density>``).
        label: for titles.
        model: the score network, if any.
        projection_model: its matching projection network, if any.
        exact_score_fn: the exact score of the data, where it is a Gaussian mixture.
    """

    score_fn: ScoreFn
    sde: SDE
    key: str
    label: str
    model: ScoreModel | None = None
    projection_model: ProjectionModel | None = None
    exact_score_fn: ScoreFn | None = None

    @property
    def exact(self) -> bool:
        return self.model is None


@functools.lru_cache(maxsize=32)
def pretrained_pair(name: str) -> tuple[ScoreModel, ProjectionModel | None]:
    """A shipped score network (eval, frozen) and its projection network where one matches it.

    Loaded once per process and shared read-only by every caller.
    """
    model = load_pretrained(name, expect_kind="score")
    assert isinstance(model, ScoreModel)
    proj_name = f"{name}-proj"
    if proj_name not in read_manifest():
        return model, None
    try:
        proj = load_pretrained(proj_name, expect_kind="projection")
        assert isinstance(proj, ProjectionModel)
        proj.check_matches(model, name)
    except (CheckpointError, ValueError):
        return model, None
    return model, proj


@functools.lru_cache(maxsize=64)
def pretrained_problem(name: str) -> str:
    """Why the shipped model ``name`` cannot be used ('' if it loads and checks out); once per process.

    A missing, corrupt or mismatched file in ``pretrained/`` (or an unreadable manifest) marks only
    the models it concerns unavailable, with this reason; the others keep working.
    """
    try:
        entry = read_manifest().get(name)
    except (OSError, ValueError) as e:
        return f"pretrained/MANIFEST.json cannot be read ({e})"
    if entry is None:
        return f"{name} is not shipped"
    try:
        if entry.get("kind") == "score":
            pretrained_pair(name)
        else:
            load_pretrained(name, expect_kind=entry.get("kind"))
    except (CheckpointError, ValueError, OSError, RuntimeError, KeyError, TypeError, AssertionError) as e:
        return f"{name}: {e}" if name not in str(e) else str(e)
    return ""


def pretrained_available(name: str) -> bool:
    """Shipped, and its file loads and matches its manifest entry (see :func:`pretrained_problem`)."""
    return not pretrained_problem(name)


def resolve_data(name: str) -> Density:
    """A preset 2-D density by name (image sets have no Density)."""
    return get_density(name)


def model_source(
    model: ScoreModel,
    key: str,
    label: str,
    projection_model: ProjectionModel | None = None,
    density: Density | None = None,
) -> ScoreSource:
    """A :class:`ScoreSource` around a score network (and its projection network, checked to match it)."""
    if projection_model is not None:
        projection_model.check_matches(model, label)
    exact = density.score_fn(model.sde) if isinstance(density, GaussianMixture) else None
    return ScoreSource(model.score_fn(), model.sde, key, label, model, projection_model, exact)


def exact_source(density: GaussianMixture, sde: SDE, key: str) -> ScoreSource:
    fn = density.score_fn(sde)
    return ScoreSource(fn, sde, f"exact:{key}:{sde.name}", "exact score", None, None, fn)


def resolve_source(
    spec: RunSpec,
    density: Density | None = None,
    *,
    session: ScoreSource | None = None,
    density_key: str | None = None,
) -> ScoreSource:
    """The score for a spec.

    Args:
        spec: the run's settings (``score``, ``sde``, ``data``).
        density: the 2-D density (default: the preset named ``spec.data``; None for images).
        session: a caller's own model (the app's trained model), used by ``session`` and ``auto``.
        density_key: the density's cache identity (default: its name).

    Raises:
        ValueError: naming what is available when the requested score does not exist.
    """
    sde = make_sde(spec.sde)
    key = density_key or spec.data
    choice = spec.score
    if choice.endswith(".safetensors"):
        model = load_model(choice, expect_kind="score")
        assert isinstance(model, ScoreModel)
        _check_model_fits(model, spec, Path(choice).name)
        return model_source(model, f"file:{Path(choice).resolve()}", Path(choice).name, None, density)
    if choice not in SCORE_CHOICES:  # a pretrained name
        if not pretrained_available(choice):
            raise ValueError(
                f"unknown score {choice!r}; valid: {', '.join(SCORE_CHOICES)}, a .safetensors file, "
                f"or a pretrained score model ({', '.join(_pretrained_scores())})"
            )
        model, proj = pretrained_pair(choice)
        _check_model_fits(model, spec, choice)
        return model_source(model, f"pretrained:{choice}", f"pretrained {choice}", proj, density)
    pre = f"{spec.data}-vp"
    order = [choice] if choice != "auto" else ["session", "pretrained", "exact"]
    for src in order:
        if src == "session" and session is not None:
            if session.sde.config() != sde.config():
                if choice == "session":
                    raise ValueError(
                        f"your model for {spec.data!r} was trained for the {session.sde.name} SDE"
                    )
                continue
            return session
        if src == "pretrained" and spec.sde == "vp" and pretrained_available(pre):
            model, proj = pretrained_pair(pre)
            return model_source(model, f"pretrained:{pre}", f"pretrained {pre}", proj, density)
        if src == "exact" and isinstance(density, GaussianMixture):
            return exact_source(density, sde, key)
    have = []
    if isinstance(density, GaussianMixture):
        have.append("exact")
    if spec.sde == "vp" and pretrained_available(pre):
        have.append("pretrained")
    if session is not None:
        have.append("session")
    wanted = "" if choice == "auto" else f"{choice} "
    problem = pretrained_problem(pre) if spec.sde == "vp" else ""
    shipped_but_broken = problem and "not shipped" not in problem
    broken = f" The shipped model is unavailable: {problem}." if shipped_but_broken else ""
    raise ValueError(
        f"no {wanted}score for {spec.data!r} with the {spec.sde.upper()} SDE; available: "
        f"{', '.join(have) or 'none'}.{broken} Pretrained models are VP only; train your own (any SDE)."
    )


def _pretrained_scores() -> list[str]:
    return [n for n, e in read_manifest().items() if e.get("kind") == "score"]


def model_shape(model: ScoreModel | ProjectionModel) -> tuple[int, ...]:
    """The sample shape a network takes: its recorded ``meta["shape"]``, else its config's."""
    if model.meta.get("shape"):
        return tuple(int(v) for v in model.meta["shape"])
    cfg = getattr(model.net, "cfg", None)
    if hasattr(cfg, "image_size"):
        return (int(cfg.in_ch), int(cfg.image_size), int(cfg.image_size))
    return (int(getattr(cfg, "dim", 2)),)


def _check_model_fits(model: ScoreModel, spec: RunSpec, what: str) -> None:
    """A score network's kind must match the data: image vs 2-D, its shape, its SDE."""
    shape = model_shape(model)
    want = image_shape(spec.data) if spec.is_image else (2,)
    if shape != tuple(want):
        kind = f"an image model of shape {shape}" if len(shape) > 1 else f"a {shape[0]}-D model"
        raise ValueError(f"{what} is {kind}, but {spec.data!r} needs shape {tuple(want)}")
    if model.sde.name != spec.sde:
        raise ValueError(f"{what} was trained for the {model.sde.name.upper()} SDE, not {spec.sde.upper()}")


def resolve_projection(spec: RunSpec, source: ScoreSource) -> Projection | None:
    """The projection hook T of a spec, or None for a sampler that takes none.

    ``auto``: the learned network where one exists, else the exact-score projection for an exact
    score, else the training-free Tweedie projection of the score network.
    """
    if not spec.info.takes_projection:
        return None
    kind = spec.projection
    if kind == "auto":
        kind = "learned" if source.projection_model is not None else ("exact" if source.exact else "tweedie")
    if kind == "learned":
        if source.projection_model is None:
            why = ""
            if source.key.startswith("pretrained:"):
                problem = pretrained_problem(source.key.split(":", 1)[1] + "-proj")
                why = f" ({problem})" if problem and "not shipped" not in problem else ""
            raise ValueError(
                f"no learned projection network for {source.label}{why}; use projection tweedie"
                + (" or exact" if source.exact_score_fn is not None else "")
            )
        return make_projection(
            "learned", score_fn=source.score_fn, sde=source.sde, model=source.projection_model
        )
    if kind == "exact":
        if source.exact_score_fn is None:
            raise ValueError(
                "the exact projection needs a Gaussian mixture density (its exact score); use tweedie"
            )
        return make_projection("exact", score_fn=source.exact_score_fn, sde=source.sde)
    return make_projection("tweedie", score_fn=source.score_fn, sde=source.sde)


# --------------------------------------------------------------------------- the trajectory
@dataclass
class Trajectory:
    """Forward and reverse particle paths on one time axis (frames), float32 arrays.

    Attributes:
        paths: (F, k, *D) recorded positions (k = ``spec.recorded()``).
        times: (F,) forward time t of each frame.
        phase: "noising" / "generation" per frame.
        labels: one slider label per frame.
        x0_hat: (F, k, *D) Tweedie's estimate at each generation frame (NaN while noising).
        final: (n, *D) all the final samples.
        data: (k, *D) x_0 where the run noised data first, else None.
        noise: (k, *D) x_T.
        n_forward: how many frames are noising frames.
        nfe: network evaluations of the generation.
        sampler_label: the sampler's label.
        source_label: the score's label.
        error: '' or why the sampler stopped (a diverged run keeps the frames it reached).
        moves: ``x_pred`` / ``x_proj`` per reverse step, (N', k, *D), for predict-project samplers.
        ts: (N + 1,) the reverse grid.
        spacing: its spacing.
    """

    paths: np.ndarray
    times: np.ndarray
    phase: list[str]
    labels: list[str]
    x0_hat: np.ndarray
    final: np.ndarray
    data: np.ndarray | None
    noise: np.ndarray
    n_forward: int
    nfe: int
    sampler_label: str
    source_label: str
    error: str = ""
    moves: dict[str, np.ndarray] = field(default_factory=dict)
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spacing: str = "uniform"

    @property
    def generation(self) -> slice:
        return slice(self.n_forward, None)

    def nbytes(self) -> int:
        arrays = [self.paths, self.x0_hat, self.final, self.noise, self.ts, *self.moves.values()]
        if self.data is not None:
            arrays.append(self.data)
        return int(sum(a.nbytes for a in arrays))


def forward_path(x0: torch.Tensor, sde: SDE, n_steps: int, g: torch.Generator) -> torch.Tensor:
    """Simulate the forward SDE (method.md eq. 1) by Euler-Maruyama from data on a uniform grid.

    Particles keep their identity: row k is the same particle at every time (no independent
    redraws, unlike tiny-diffusion's forward frames).

    Args:
        x0: data (n, *D).

    Returns:
        (n_steps + 1, n, *D) positions at t_k = k T / n_steps.
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


def initial_state(
    spec: RunSpec, sde: SDE, density: Density | None
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """``(x_0, forward path, x_T)`` of a spec: the same for every sampler, N and projection."""
    if spec.start == "prior":
        shape = image_shape(spec.data) if spec.is_image else (2,)
        return None, None, sde.prior_sample((spec.n, *shape), generator(spec.seed, STREAM_PRIOR))
    if density is None:
        raise ValueError("a forward start needs a density")
    x0 = density.sample(spec.n, generator(spec.seed, STREAM_DATA)).float()
    fwd = forward_path(x0, sde, FWD_STEPS, generator(spec.seed, STREAM_FORWARD))
    return x0, fwd, fwd[-1].clone()


def run(
    spec: RunSpec,
    *,
    density: Density | None = None,
    source: ScoreSource | None = None,
) -> Trajectory:
    """Run a spec: its start, then the sampler from x_T, every step recorded.

    Args:
        spec: the settings (validated here, before any work).
        density: the 2-D density (default: the preset ``spec.data``; unused for images).
        source: the score (default: :func:`resolve_source` of the spec).

    Returns:
        the :class:`Trajectory`. A diverged sampler returns the frames it reached with ``error`` set.
    """
    spec.validate()
    info = spec.info
    if density is None and not spec.is_image:
        if spec.data not in DENSITY_NAMES:
            raise ValueError(f"unknown data {spec.data!r}; valid: {', '.join((*DENSITY_NAMES, *IMAGE_SETS))}")
        density = resolve_data(spec.data)
    src = source if source is not None else resolve_source(spec, density)
    if src.model is not None:  # every path (file, pretrained, session, a caller's source) is checked
        _check_model_fits(src.model, spec, src.label)
        floats = net_activation_floats(net_config(src.model.net), training=False)
        check_work(floats, spec.n, f"sampling {spec.n} samples with {src.label}")
    uses_exact = src.exact or (spec.info.takes_projection and spec.projection == "exact")
    if uses_exact and isinstance(density, GaussianMixture):  # the exact score costs n x K x d per call
        check_exact_score(spec.n, int(density.weights.numel()), density.dim)
    sde = src.sde
    project = resolve_projection(spec, src)
    ts = sde.time_grid(spec.steps, spec.grid_spacing())  # type: ignore[arg-type]
    x0, fwd, x_T = initial_state(spec, sde, density)
    k = spec.recorded()

    xs, x0s, times = [x_T[:k].clone()], [], [float(ts[0])]
    moves: dict[str, list[torch.Tensor]] = {"x_pred": [], "x_proj": []}
    nfe = [0]
    last = [x_T]

    def callback(step: dict) -> None:
        last[0] = step["x"]
        nfe[0] = step["nfe"]
        if k == 0:
            return
        xs.append(step["x"][:k].detach().clone())
        x0s.append(step["x0_hat"][:k].detach().clone())
        times.append(step["t"])
        if "x_pred" in step:
            moves["x_pred"].append(step["x_pred"][:k].detach().clone())
            moves["x_proj"].append(step["x_proj"][:k].detach().clone())

    g_stream = STREAM_PRIOR_SAMPLER if spec.start == "prior" else STREAM_SAMPLER
    kwargs = sampler_kwargs(info, project, spec.effective_strength())
    error = ""
    try:
        with torch.inference_mode():
            final = info.fn(
                src.score_fn,
                sde,
                x_T,
                ts,
                final_denoise=spec.final_denoise,
                callback=callback,
                generator=generator(spec.seed, g_stream),
                **kwargs,
            )
    except SamplerDiverged as e:
        error = f"{e}. Try more steps, a smaller projection strength, or another sampler."
        final = last[0]
    x0s.append(xs[-1])  # at the last frame the sample is its own estimate
    x0s = x0s[: len(xs)]
    rev_t = np.asarray(times, dtype=np.float64)
    rev_x = torch.stack(xs)
    rev_x0 = torch.stack(x0s)
    if fwd is not None:
        # forward frames at the times the reverse run visits (its mirror image), nearest fine step
        idx = np.unique(np.clip(np.round(rev_t[::-1] / sde.T * FWD_STEPS).astype(int), 0, FWD_STEPS))
        fwd_t = idx * sde.T / FWD_STEPS
        fwd_x = fwd[torch.as_tensor(idx), :k]
    else:
        fwd_t = np.zeros(0)
        fwd_x = rev_x[:0]
    paths = torch.cat([fwd_x, rev_x]).numpy().astype(np.float32)
    x0_hat = np.concatenate([np.full(fwd_x.shape, np.nan, np.float32), rev_x0.numpy().astype(np.float32)])
    all_t = np.concatenate([fwd_t, rev_t])
    phase = ["noising"] * len(fwd_t) + ["generation"] * len(rev_t)
    labels = [f"{p} t={t:.3f}" for p, t in zip(phase, all_t, strict=True)]
    return Trajectory(
        paths=paths,
        times=all_t,
        phase=phase,
        labels=labels,
        x0_hat=x0_hat,
        final=final.detach().numpy().astype(np.float32),
        data=None if x0 is None else x0[:k].numpy().astype(np.float32),
        noise=x_T[:k].numpy().astype(np.float32),
        n_forward=len(fwd_t),
        nfe=nfe[0],
        sampler_label=info.label,
        source_label=src.label,
        error=error,
        moves={name: torch.stack(v).numpy().astype(np.float32) for name, v in moves.items() if v},
        ts=ts.numpy(),
        spacing=spec.grid_spacing(),
    )
