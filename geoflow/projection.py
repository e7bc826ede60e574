"""The paper's predict-project step (method.md section 3): learned T network and training-free variants.

One reverse step ``t -> t' = t - dt`` with ``b = beta(t)`` (the paper's beta, ``g(t)^2 / 2``):

    predict:  x_pred = x + b (2 s_theta(x, t) + x) dt
    project:  x_proj = x_pred + sqrt(b) * dmu * dt * T(x_pred, t')
    diffuse:  x      = x_proj + sqrt(2 b dt) z        (no noise after the last step)

Projections ``T`` (all follow :class:`geoflow.samplers.Projection`, one NFE per call):

* ``"learned"``: a :class:`ProjectionModel` trained with the score network frozen on method.md's
  loss ``|| x_pred + T - a(t') x_0 ||^2 + (sqrt(b) / 2) || T ||^2`` (:func:`train_projection`).
* ``"tweedie"``: the training-free approximation of the loss's pointwise optimum,
  ``T(x) = (2 / (2 + c)) s(t')^2 s_theta(x, t')`` with ``c = sqrt(b)``.
* ``"exact"``: the same formula with the exact score of a Gaussian mixture.

Samplers registered here (``geoflow.samplers.SAMPLERS``):

* ``predict_project``: the paper's step, literally (Euler-Maruyama with the projection hook).
* ``predict_project_ancestral``: a geometric variant that keeps samples on the gradient-flow path:
  the projection estimates the kernel mean ``a(t') x_0`` at the predicted point, and the step
  moves to the Gaussian posterior of the forward kernel with exactly its noise (the DDPM ancestral
  step, with the projection's look-ahead denoiser blended in by ``strength``).
* ``predict_project_renoise``: the paper's step followed by the noise that restores the spread
  the projection removed (so the sample keeps the marginal's variance around the kernel mean).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from geoflow.nets import build_net, net_config
from geoflow.samplers import (
    Callback,
    Projection,
    SamplerInfo,
    ScoreFn,
    _half_g2,
    _Run,
    register_sampler,
    sample_euler_maruyama,
)
from geoflow.score import ScoreModel, batch_time
from geoflow.sde import SDE, append_dims, sde_from_config
from geoflow.train import DataFn, Progress, StopFlag, TrainConfig, optimise

__all__ = [
    "DEFAULT_STRENGTH",
    "PROJECTION_KINDS",
    "TRAIN_MODES",
    "LearnedProjection",
    "ProjectionModel",
    "TweedieProjection",
    "make_projection",
    "projection_loss",
    "sample_predict_project",
    "sample_predict_project_ancestral",
    "sample_predict_project_langevin",
    "sample_predict_project_renoise",
    "train_projection",
]

PROJECTION_KINDS = ("learned", "tweedie", "exact")
TRAIN_MODES = ("random_dt", "fixed_N")
# Default strengths = the one fixed value per sampler that measured best over every data set and N
# in benchmarks/projection.py (grids: dmu in {0.5, 1, 2, 4}; ancestral {0.25, 0.5, 1}; Langevin
# {0.05, 0.1, 0.2, 0.4}); see the "projection" section of benchmarks/RESULTS.md.
DEFAULT_STRENGTH = 1.0
DEFAULT_ANCESTRAL_STRENGTH = 0.25
DEFAULT_RENOISE_STRENGTH = 0.5
DEFAULT_LANGEVIN_STRENGTH = 0.4
# random_dt training draws N log-uniformly in this range (dt = (T - t_min) / N)
RANDOM_N_RANGE = (5, 200)


def shrink_factor(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """``2 / (2 + c)`` with ``c = sqrt(beta(t))`` (beta = g^2 / 2): the optimum's factor, shape of t."""
    c = torch.sqrt(0.5 * sde.diffusion(t) ** 2)
    return 2.0 / (2.0 + c)


def _scal(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample (B,) tensor broadcast against x (B, *D) in x's dtype and device."""
    return append_dims(v.to(device=x.device, dtype=x.dtype), x.ndim)


def score_fingerprint(score_model: nn.Module) -> str:
    """sha256 of a score model's config and weights: what a projection network is tied to.

    Independent of the file it was loaded from (a retrained or different score network changes it).
    """
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(score_model.config(), sort_keys=True).encode())  # type: ignore[operator]
    for k, v in sorted(score_model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- the network
class ProjectionModel(nn.Module):
    """The projection network ``T_theta(x, t')`` of method.md section 3, tied to one score network.

    The raw network sees the scaled input ``c_in(t') x`` and ``t' = t - dt`` (method.md conditions
    T on t - dt); its output ``f`` is turned into a displacement with the optimum's known factor
    and the step's own length scale:

        T(x, t, t') = -(2 / (2 + c(t))) * s(t) * f(c_in(t') x, t'),   c = sqrt(beta(t)).

    The output scale is ``s(t)``, not ``s(t')``: a large step leaves x_pred off the marginal at t'
    by up to the noise level it started from (at the last step ``s(t') ~ 0`` while the optimum
    does not vanish). Training can start from the score network's weights (warm start, same
    architecture): then ``f`` starts as the eps-prediction at t', i.e. ``s(t) / s(t')`` times the
    training-free (Tweedie) projection.

    Args:
        net: raw network ``f(x, t)`` (``geoflow.nets.build_net`` family), output shaped like x.
        sde: the forward SDE (must be the score network's).
        data_std: input scaling, as in :class:`geoflow.score.ScoreModel`.
        score_sha256: :func:`score_fingerprint` of the score network it was trained with.
        score_name: human-readable name of that score network (a pretrained name or a file).
        train_mode: ``"random_dt"`` (one T for every step size) or ``"fixed_N"`` (one grid).
        n_steps: the grid's N for ``fixed_N``.
        meta: free-form JSON-able facts (training summary...).
    """

    def __init__(
        self,
        net: nn.Module,
        sde: SDE,
        data_std: float = 1.0,
        score_sha256: str | None = None,
        score_name: str | None = None,
        train_mode: str = "random_dt",
        n_steps: int | None = None,
        meta: dict | None = None,
    ) -> None:
        super().__init__()
        _check_mode(train_mode, n_steps)
        self.net, self.sde, self.data_std = net, sde, float(data_std)
        self.score_sha256, self.score_name = score_sha256, score_name
        self.train_mode, self.n_steps = train_mode, n_steps
        self.meta = dict(meta or {})

    def forward(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """``T(x_pred, t, t')``: x (B, *D), t and t' (B,) -> displacement (B, *D)."""
        tb, tn = batch_time(t, x), batch_time(t_next, x)
        a, s = self.sde.alpha(tn), self.sde.sigma(tn)
        c_in = 1.0 / torch.sqrt(a * a * self.data_std**2 + s * s)
        f = self.net(x * _scal(c_in, x), tn.to(x.dtype))
        return -_scal(shrink_factor(self.sde, tb) * self.sde.sigma(tb), x) * f

    def check_matches(self, score_model: nn.Module, what: str = "the score network") -> None:
        """Raise ``ValueError`` unless ``score_model`` is the network this T was trained with."""
        if self.sde.config() != score_model.sde.config():  # type: ignore[union-attr]
            raise ValueError(
                f"projection network was trained for SDE {self.sde.config()}, "
                f"but {what} uses {score_model.sde.config()}"  # type: ignore[union-attr]
            )
        got = score_fingerprint(score_model)
        if self.score_sha256 is not None and got != self.score_sha256:
            raise ValueError(
                f"projection network does not match {what}: it was trained with score network "
                f"{self.score_name or '?'} (sha256 {self.score_sha256[:12]}), got sha256 {got[:12]}; "
                "train one for this score network with `geoflow train-projection`"
            )

    def config(self) -> dict:
        """Everything needed to rebuild the model around its state dict (``kind = "projection"``)."""
        return {
            "kind": "projection",
            "net": net_config(self.net),
            "sde": self.sde.config(),
            "data_std": self.data_std,
            "score_sha256": self.score_sha256,
            "score_name": self.score_name,
            "train_mode": self.train_mode,
            "n_steps": self.n_steps,
            "meta": self.meta,
        }

    @classmethod
    def from_config(cls, cfg: dict) -> ProjectionModel:
        """Inverse of :meth:`config` (weights not loaded)."""
        try:
            return cls(
                build_net(cfg["net"]),
                sde_from_config(cfg["sde"]),
                data_std=cfg.get("data_std", 1.0),
                score_sha256=cfg.get("score_sha256"),
                score_name=cfg.get("score_name"),
                train_mode=cfg.get("train_mode", "random_dt"),
                n_steps=cfg.get("n_steps"),
                meta=cfg.get("meta"),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"projection model config is incomplete or malformed: {e}") from None


def _check_mode(mode: str, n_steps: int | None) -> None:
    if mode not in TRAIN_MODES:
        raise ValueError(f"unknown projection training mode {mode!r}; valid: {', '.join(TRAIN_MODES)}")
    if mode == "fixed_N" and (not isinstance(n_steps, int) or n_steps < 2):
        raise ValueError(f"fixed_N training needs n_steps >= 2 (the sampling grid's N), got {n_steps!r}")


# --------------------------------------------------------------------------- projections
class LearnedProjection:
    """``T = T_theta(x_pred, t, t')`` from a trained :class:`ProjectionModel` (1 NFE per call)."""

    nfe_per_call = 1

    def __init__(self, model: ProjectionModel) -> None:
        self.model = model

    @torch.no_grad()
    def __call__(self, x_pred: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        return self.model(x_pred, t, t_next)


class TweedieProjection:
    """Training-free projection ``T(x) = (2 / (2 + c)) s(t')^2 score(x, t')``, ``c = sqrt(beta(t))``.

    method.md section 3: the loss's pointwise optimum ``(2/(2+c)) (E[x_mean | x_pred] - x)`` with
    ``E[x_mean | x_pred]`` replaced by Tweedie's estimate at t'. With a mixture's exact score it is
    the exact-score projection. One score evaluation (1 NFE) per call.
    """

    nfe_per_call = 1

    def __init__(self, score_fn: ScoreFn, sde: SDE) -> None:
        self.score_fn, self.sde = score_fn, sde

    @torch.no_grad()
    def __call__(self, x_pred: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        tb, tn = batch_time(t, x_pred), batch_time(t_next, x_pred)
        s2 = self.sde.sigma(tn) ** 2
        return _scal(shrink_factor(self.sde, tb) * s2, x_pred) * self.score_fn(x_pred, tn)


def make_projection(
    kind: str, *, score_fn: ScoreFn, sde: SDE, model: ProjectionModel | None = None
) -> Projection:
    """A projection hook by kind.

    Args:
        kind: ``"learned"`` (needs ``model``), ``"tweedie"`` (uses ``score_fn``, the score network),
            or ``"exact"`` (pass a mixture's exact score as ``score_fn``).
        score_fn: ``score(x, t)``, t of shape (B,).
        sde: the forward SDE.
        model: the trained projection network for ``"learned"``.
    """
    if kind not in PROJECTION_KINDS:
        raise ValueError(f"unknown projection {kind!r}; valid: {', '.join(PROJECTION_KINDS)}")
    if kind == "learned":
        if model is None:
            raise ValueError("the learned projection needs a trained projection network (model=...)")
        return LearnedProjection(model)
    return TweedieProjection(score_fn, sde)


# --------------------------------------------------------------------------- training
def _training_times(
    sde: SDE, b: int, mode: str, n_steps: int | None, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(t, t')`` (B,) float64: steps of the uniform N-grid, or of a random step size."""
    if mode == "fixed_N":
        assert n_steps is not None
        ts = sde.time_grid(n_steps, "uniform")
        k = torch.randint(0, n_steps, (b,), generator=g)
        return ts[k], ts[k + 1]
    lo, hi = math.log(RANDOM_N_RANGE[0]), math.log(RANDOM_N_RANGE[1])
    n = torch.exp(lo + (hi - lo) * torch.rand(b, generator=g, dtype=torch.float64))
    dt = (sde.T - sde.t_min) / n
    t = sde.t_min + dt + (sde.T - sde.t_min - dt) * torch.rand(b, generator=g, dtype=torch.float64)
    return t, t - dt


def projection_loss(
    proj: ProjectionModel,
    score_model: ScoreModel,
    x0: torch.Tensor,
    g: torch.Generator,
    mode: str = "random_dt",
    n_steps: int | None = None,
) -> torch.Tensor:
    """One minibatch of method.md section 3's projection loss (score network frozen).

    ``x_t = a(t) x_0 + s(t) z``; ``x_pred = x_t + b (2 s_theta(x_t, t) + x_t) dt``;
    ``x_mean = a(t') x_0``; per sample ``|| x_pred + T - x_mean ||^2 + (sqrt(b) / 2) || T ||^2``,
    averaged over the batch and divided by the dimension (a constant, for readable numbers).

    Args:
        x0: data minibatch (B, *D).
    """
    sde = score_model.sde
    bsz = x0.shape[0]
    t, t_next = _training_times(sde, bsz, mode, n_steps, g)
    t, t_next = t.to(x0.device), t_next.to(x0.device)
    z = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
    x_t = _scal(sde.alpha(t), x0) * x0 + _scal(sde.sigma(t), x0) * z
    b = 0.5 * sde.diffusion(t) ** 2
    dt = _scal(t - t_next, x0)
    with torch.no_grad():
        s = score_model.score(x_t, t)
        # predict: the sampler's Euler step of the reverse drift, with the frozen score network
        x_pred = x_t - (sde.drift(x_t, t) - 2.0 * _scal(b, x0) * s) * dt
    x_mean = _scal(sde.alpha(t_next), x0) * x0
    T = proj(x_pred, t, t_next)
    fit = (x_pred + T - x_mean).flatten(1).pow(2).sum(1)
    penalty = 0.5 * torch.sqrt(b).to(x0.dtype) * T.flatten(1).pow(2).sum(1)
    return (fit + penalty).mean() / x0[0].numel()


def new_projection_model(
    score_model: ScoreModel,
    mode: str = "random_dt",
    n_steps: int | None = None,
    net_cfg: dict | None = None,
    score_name: str | None = None,
    warm_start: bool = True,
) -> ProjectionModel:
    """A fresh T network for ``score_model`` (same architecture unless ``net_cfg`` is given).

    With ``warm_start`` and a matching architecture, T's network starts from the score network's.
    """
    cfg = net_cfg if net_cfg is not None else net_config(score_model.net)
    net = build_net(dict(cfg))
    if warm_start and cfg == net_config(score_model.net):
        net.load_state_dict(score_model.net.state_dict())
    return ProjectionModel(
        net,
        score_model.sde,
        score_model.data_std,
        score_sha256=score_fingerprint(score_model),
        score_name=score_name,
        train_mode=mode,
        n_steps=n_steps if mode == "fixed_N" else None,
        meta={k: score_model.meta[k] for k in ("data", "shape") if k in score_model.meta},
    )


def train_projection(
    score_model: ScoreModel,
    data_fn: DataFn,
    cfg: TrainConfig = TrainConfig(steps=2000),
    mode: str = "random_dt",
    n_steps: int | None = None,
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    *,
    net_cfg: dict | None = None,
    score_name: str | None = None,
    warm_start: bool = True,
) -> ProjectionModel:
    """Train a projection network on method.md section 3's loss with the score network frozen.

    Args:
        score_model: the frozen score network (its weights are not touched).
        data_fn: ``data(n, generator) -> (n, *D)`` minibatches of x_0.
        cfg: optimisation settings (the shared loop of ``geoflow.train.optimise``).
        mode: ``"random_dt"`` (t uniform, N log-uniform in ``RANDOM_N_RANGE``) or ``"fixed_N"``
            (t on the uniform grid of ``n_steps`` steps).
        n_steps: the grid's N for ``fixed_N``.
        progress, should_stop: as in :func:`geoflow.train.train_score`.
        net_cfg: network config (default: the score network's).
        score_name: name recorded in the checkpoint.
        warm_start: start from the score network's weights when the architectures match.

    Returns:
        the trained :class:`ProjectionModel` in eval mode (EMA weights), the loop's summary in
        ``model.meta["train"]``.
    """
    _check_mode(mode, n_steps)
    device = torch.device(cfg.device)
    proj = new_projection_model(score_model, mode, n_steps, net_cfg, score_name, warm_start)
    frozen = [p.requires_grad for p in score_model.parameters()]
    score_model.to(device).eval()
    for p in score_model.parameters():
        p.requires_grad_(False)
    proj.to(device)

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        return projection_loss(proj, score_model, data_fn(cfg.batch_size, g).to(device), g, mode, n_steps)

    try:
        out = optimise(proj, loss_fn, cfg, progress, should_stop)
    finally:
        for p, r in zip(score_model.parameters(), frozen, strict=True):
            p.requires_grad_(r)
        score_model.to("cpu")
    proj.to("cpu")
    proj.meta["train"] = {"steps": out["steps"], "loss": out["loss"], "batch_size": cfg.batch_size}
    return proj


# --------------------------------------------------------------------------- samplers
def _default_projection(project: Projection | None, score_fn: ScoreFn, sde: SDE) -> Projection:
    return project if project is not None else TweedieProjection(score_fn, sde)


@torch.no_grad()
def sample_predict_project(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    project: Projection | None = None,
    strength: float | None = None,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The paper's predict-project sampler (method.md section 3), 2 NFE per step.

    predict ``x_pred = x + b (2 s + x) dt``; project ``x_proj = x_pred + sqrt(b) dmu dt T``;
    diffuse ``x = x_proj + sqrt(2 b dt) z`` (none after the last step). ``project`` defaults to
    the training-free Tweedie projection of ``score_fn``; ``strength`` is ``dmu``.
    """
    strength = DEFAULT_STRENGTH if strength is None else float(strength)
    if strength < 0:
        raise ValueError(f"projection strength must be >= 0, got {strength}")
    return sample_euler_maruyama(
        score_fn,
        sde,
        x,
        ts,
        project=_default_projection(project, score_fn, sde),
        strength=strength,
        final_denoise=final_denoise,
        callback=callback,
        generator=generator,
    )


@torch.no_grad()
def sample_predict_project_ancestral(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    project: Projection | None = None,
    strength: float | None = None,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Geometric variant: project toward the kernel mean, then the posterior noise (2 NFE per step).

    The paper's projection under-noises (method.md section 3): it pulls toward the kernel mean
    ``a(t') x_0`` and adds only ``2 b dt`` of variance. This variant lands on the forward kernel's
    Gaussian posterior ``q(x_t' | x_t, x_0) = N(mu, v)`` instead, which for Gaussian data keeps the
    sample on the gradient-flow path:

        x0_hat  = Tweedie(x, t)                                   (1 NFE)
        predict: x_pred = x + b (2 s + x) dt
        project: m = x_pred + ((2 + c) / 2) T(x_pred, t, t')      (1 NFE; m estimates a(t') x_0)
                 x0_use = x0_hat + strength (m / a(t') - x0_hat)
        diffuse: x = (r s'^2 / s^2) x + (a' v_k / s^2) x0_use + sqrt(s'^2 v_k / s^2) z

    with ``r = a(t) / a(t')``, ``v_k = s^2 - r^2 s'^2`` (the kernel's variance from t' to t).
    ``strength = 0`` is exactly the DDPM ancestral step (``ddim`` with eta = 1); ``strength = 1``
    uses only the projection's look-ahead estimate. The callback's ``x_proj`` is the posterior
    mean before the noise.
    """
    strength = DEFAULT_ANCESTRAL_STRENGTH if strength is None else float(strength)
    if strength < 0:
        raise ValueError(f"projection strength must be >= 0, got {strength}")
    project = _default_projection(project, score_fn, sde)
    run = _Run(score_fn, sde, x, ts, callback)
    n = run.n
    path = run.brownian(x, generator)
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        dt = t - t_next
        a, s = float(sde.alpha(t)), float(sde.sigma(t))
        a2, s2 = float(sde.alpha(t_next)), float(sde.sigma(t_next))
        # predict: the Euler step of the reverse drift
        x_pred, x0_hat = run.predict(x, t, dt)
        # project: the kernel mean a(t') x_0 estimated at the predicted point
        T = project(x_pred, batch_time(t, x), batch_time(t_next, x))
        run.nfe += project.nfe_per_call
        m = x_pred + T / float(shrink_factor(sde, torch.tensor(t, dtype=torch.float64)))
        x0_use = x0_hat + strength * (m / a2 - x0_hat)
        r = a / a2
        v_k = max(s * s - r * r * s2 * s2, 0.0)
        mean = (r * s2 * s2 / (s * s)) * x + (a2 * v_k / (s * s)) * x0_use
        # diffuse: exactly the posterior's spread
        z = path.increment(t_next) / math.sqrt(dt)
        x = mean + math.sqrt(s2 * s2 * v_k / (s * s)) * z
        run.report(i, t_next, x, x0_hat, x_pred=x_pred, x_proj=mean)
    return x


@torch.no_grad()
def sample_predict_project_renoise(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    project: Projection | None = None,
    strength: float | None = None,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The paper's step plus the noise its projection removed (2 NFE per step).

    The projection ``sqrt(b) dmu dt T`` moves x_pred a fraction ``lam = sqrt(b) dmu dt 2/(2+c)``
    of the way to the kernel mean (exactly so for the optimal T), shrinking its spread around
    that mean, about ``s(t')^2 - 2 b dt`` before the noise, by ``(1 - lam)^2``. The diffuse step
    adds that variance back on top of Euler-Maruyama's:

        v = 2 b dt + lam (2 - lam) max(s(t')^2 - 2 b dt, 0),   x = x_proj + sqrt(v) z,

    so the sample keeps the marginal's spread (no noise after the last step, as the paper).
    """
    strength = DEFAULT_RENOISE_STRENGTH if strength is None else float(strength)
    if strength < 0:
        raise ValueError(f"projection strength must be >= 0, got {strength}")
    project = _default_projection(project, score_fn, sde)
    run = _Run(score_fn, sde, x, ts, callback)
    n = run.n
    path = run.brownian(x, generator)
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        dt = t - t_next
        b = _half_g2(sde, t)
        # predict
        x_pred, x0_hat = run.predict(x, t, dt)
        # project: the paper's move, a fraction lam of the way to the kernel mean
        T = project(x_pred, batch_time(t, x), batch_time(t_next, x))
        run.nfe += project.nfe_per_call
        x_proj = x_pred + math.sqrt(b) * strength * dt * T
        lam = min(math.sqrt(b) * strength * dt * float(shrink_factor(sde, torch.tensor(t))), 1.0)
        # diffuse: Euler-Maruyama's noise plus the spread the projection removed
        var = 2.0 * b * dt + lam * (2.0 - lam) * max(float(sde.sigma(t_next)) ** 2 - 2.0 * b * dt, 0.0)
        dw = path.increment(t_next)
        last = i == n - 1
        x = x_proj if last else x_proj + math.sqrt(var / dt) * dw
        run.report(i, t_next, x, x0_hat, x_pred=x_pred, x_proj=x_proj)
    return x


@torch.no_grad()
def sample_predict_project_langevin(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    project: Projection | None = None,
    strength: float | None = None,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Geometric variant: project onto the path's point by its own Wasserstein gradient flow.

    The point of the gradient-flow path at t' is the measure ``p_t'``; the Wasserstein gradient
    flow of ``KL(mu || p_t')`` moves any ``mu`` toward it (method.md section 2, the energy-based
    view), and one Langevin step is its particle discretisation (the heat part exact, as in the
    JKO split). So, per step (2 NFE):

        predict: x_pred = x + b (2 s(x, t) + x) dt + sqrt(2 b) dW        (Euler-Maruyama)
        project: x      = x_pred + eps s(x_pred, t') + sqrt(2 eps) z',   eps = strength * s(t')^2

    ``eps`` scales with the marginal's noise variance ``s(t')^2``, the length scale of ``p_t'``'s
    finest features. This is a predictor-corrector scheme (Song et al. 2021) whose corrector comes
    after the predictor, with a geometric step size instead of the signal-to-noise rule; ``z'`` is
    drawn from a second generator seeded from ``generator``. With ``final_denoise`` the step
    before the final denoising projects too (it ends on p_{t_{N-1}}), the final step does not.
    Its projection is the score itself: passing a ``project`` hook is an error.
    """
    if project is not None:
        raise ValueError("the Langevin projection uses the score network itself; it takes no projection T")
    strength = DEFAULT_LANGEVIN_STRENGTH if strength is None else float(strength)
    if strength < 0:
        raise ValueError(f"projection strength must be >= 0, got {strength}")
    run = _Run(score_fn, sde, x, ts, callback)
    n = run.n
    path = run.brownian(x, generator)
    g_proj = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        dt = t - t_next
        b = _half_g2(sde, t)
        # predict: a full Euler-Maruyama step
        x_pred, x0_hat = run.predict(x, t, dt)
        x_pred = x_pred + math.sqrt(2.0 * b) * path.increment(t_next)
        # project: one Langevin step of the flow of KL(mu || p_t') toward the path's point
        eps = strength * float(sde.sigma(t_next)) ** 2
        z = torch.randn(x.shape, generator=g_proj, dtype=x.dtype).to(x.device)
        x = x_pred + eps * run.score(x_pred, t_next) + math.sqrt(2.0 * eps) * z
        run.report(i, t_next, x, x0_hat, x_pred=x_pred, x_proj=x)
    return x


def _nfe_two_per_step(n: int, final_denoise: bool) -> int:
    # 2 evaluations per step; the final denoising step costs one
    return 2 * n - 1 if final_denoise else 2 * n


register_sampler(
    "predict_project",
    SamplerInfo(sample_predict_project, "Predict-project (paper)", True, "uniform", _nfe_two_per_step),
)
register_sampler(
    "predict_project_ancestral",
    SamplerInfo(
        sample_predict_project_ancestral,
        "Predict-project, ancestral (kernel posterior)",
        True,
        "uniform",
        _nfe_two_per_step,
    ),
)
register_sampler(
    "predict_project_langevin",
    SamplerInfo(
        sample_predict_project_langevin,
        "Predict-project, Langevin projection onto p_t'",
        True,
        "uniform",
        _nfe_two_per_step,
    ),
)
register_sampler(
    "predict_project_renoise",
    SamplerInfo(
        sample_predict_project_renoise,
        "Predict-project, spread restored",
        True,
        "uniform",
        _nfe_two_per_step,
    ),
)

# The default strength of each predict-project sampler (its units differ: dmu for the paper's step
# and renoise, the look-ahead weight for ancestral, eps / s(t')^2 for Langevin).
DEFAULT_STRENGTHS: dict[str, float] = {
    "predict_project": DEFAULT_STRENGTH,
    "predict_project_ancestral": DEFAULT_ANCESTRAL_STRENGTH,
    "predict_project_langevin": DEFAULT_LANGEVIN_STRENGTH,
    "predict_project_renoise": DEFAULT_RENOISE_STRENGTH,
}
# samplers that take a projection hook T (the Langevin variant projects with the score itself)
USES_T = ("predict_project", "predict_project_ancestral", "predict_project_renoise")
