"""The paper's predict-project samplers and their geometric variants (method.md section 3).

One reverse step ``t -> t' = t - dt`` with ``b = beta(t)`` (the paper's beta, ``g(t)^2 / 2``):

    predict:  x_pred = x + b (2 s_theta(x, t) + x) dt
    project:  x_proj = x_pred + sqrt(b) * dmu * dt * T(x_pred, t')
    diffuse:  x      = x_proj + sqrt(2 b dt) z        (no noise after the last step)

Samplers (pure functions, the signature of ``geoflow.samplers``; the projection hooks ``T`` live in
``geoflow.projection``):

* :func:`sample_predict_project`: the paper's step, literally (Euler-Maruyama with the hook).
* :func:`sample_predict_project_ancestral`: project toward the kernel mean, then the forward
  kernel's Gaussian posterior noise (the DDPM ancestral step with a look-ahead denoiser).
* :func:`sample_predict_project_renoise`: the paper's step plus the noise its projection removed.
* :func:`sample_predict_project_langevin`: a Langevin step of the flow of ``KL(mu || p_t')``
  after every Euler-Maruyama step; it projects with the score itself and takes no T.
* :func:`sample_predict_project_reuse`: the training-free step at Euler-Maruyama's cost (1 NFE per
  step): the projection's score evaluation is reused by the next predict step.

``DEFAULT_STRENGTHS`` holds each sampler's measured default strength (benchmarks/projection.py);
``geoflow.registry`` publishes them.
"""

from __future__ import annotations

import math

import torch

from geoflow.projection import TweedieProjection, shrink_factor
from geoflow.samplers import (
    Callback,
    Projection,
    SamplerRun,
    child_generator,
    euler_maruyama_steps,
    randn_like_on,
)
from geoflow.score import ScoreFn
from geoflow.sde import SDE, paper_beta

# Default strengths = the one fixed value per sampler that measured best over every data set and N
# in the earlier strength sweep of benchmarks/projection.py (grids: dmu in {0.5, 1, 2, 4}; ancestral
# {0.25, 0.5, 1}; Langevin {0.05, 0.1, 0.2, 0.4}); its tables are kept in the "projection" section of
# benchmarks/RESULTS.md (benchmarks/projection_earlier.md), which now runs each default. Units differ:
# dmu for the paper's step and renoise, the look-ahead weight for ancestral, eps / s(t')^2 for
# Langevin.
DEFAULT_STRENGTHS: dict[str, float] = {
    "predict_project": 1.0,
    "predict_project_ancestral": 0.25,
    "predict_project_langevin": 0.4,
    "predict_project_renoise": 0.5,
    # not measured: predict_project's dmu = 1, untuned for the reuse variant
    "predict_project_reuse": 1.0,
}


def _strength(name: str, strength: float | None) -> float:
    value = DEFAULT_STRENGTHS[name] if strength is None else float(strength)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"projection strength must be a finite number >= 0, got {strength!r}")
    return value


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
    strength = _strength("predict_project", strength)
    return euler_maruyama_steps(
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
    strength = _strength("predict_project_ancestral", strength)
    project = _default_projection(project, score_fn, sde)
    run = SamplerRun(score_fn, sde, x, ts, callback)
    n = run.n
    path = run.brownian(x, generator)
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        dt = t - t_next
        a, s, a2, s2 = run.alpha_sigma(t, t_next)
        # predict: the Euler step of the reverse drift
        x_pred, x0_hat = run.predict(x, t, dt)
        # project: the kernel mean a(t') x_0 estimated at the predicted point
        T = run.project(project, x_pred, x, t, t_next)
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
    strength = _strength("predict_project_renoise", strength)
    project = _default_projection(project, score_fn, sde)
    run = SamplerRun(score_fn, sde, x, ts, callback)
    n = run.n
    path = run.brownian(x, generator)
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        dt = t - t_next
        b = float(paper_beta(sde, t))
        # predict
        x_pred, x0_hat = run.predict(x, t, dt)
        # project: the paper's move, a fraction lam of the way to the kernel mean
        T = run.project(project, x_pred, x, t, t_next)
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
        raise ValueError(
            "predict_project_langevin projects with the score itself and takes no projection T; "
            "drop the T (or choose predict_project, predict_project_ancestral or predict_project_renoise)"
        )
    strength = _strength("predict_project_langevin", strength)
    run = SamplerRun(score_fn, sde, x, ts, callback)
    n = run.n
    path = run.brownian(x, generator)
    g_proj = child_generator(generator)
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        dt = t - t_next
        b = float(paper_beta(sde, t))
        # predict: a full Euler-Maruyama step
        x_pred, x0_hat = run.predict(x, t, dt)
        x_pred = x_pred + math.sqrt(2.0 * b) * path.increment(t_next)
        # project: one Langevin step of the flow of KL(mu || p_t') toward the path's point
        eps = strength * float(sde.sigma(t_next)) ** 2
        z = randn_like_on(x, g_proj)
        x = x_pred + eps * run.score(x_pred, t_next) + math.sqrt(2.0 * eps) * z
        run.report(i, t_next, x, x0_hat, x_pred=x_pred, x_proj=x)
    return x


@torch.no_grad()
def sample_predict_project_reuse(
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
    """Training-free predict-project at Euler-Maruyama's cost: 1 NFE per step, by reusing a score.

    The paper's step costs 2 NFE: ``s(x, t)`` for the predict and ``s(., t')`` for the Tweedie
    projection ``T = (2 / (2 + c)) s(t')^2 s(., t')``. Here the score the projection evaluates at
    t' is also the next step's predict score, so only the first step pays for both. For that
    score to belong to the point the next step starts from, the noise comes before the projection:

        predict:  x_pred = x + b (2 s_k + x) dt            (s_k: the score kept from the last step)
        diffuse:  x_diff = x_pred + sqrt(2 b dt) z         (no noise after the last step)
        project:  s_{k+1} = s_theta(x_diff, t')            (1 NFE)
                  x      = x_diff + sqrt(b) dmu dt T,   T = (2 / (2 + c)) s(t')^2 s_{k+1}

    What is approximated: the next predict needs ``s_theta(x, t')`` at the projected point, and
    gets ``s_theta(x_diff, t')``, the score before the projection moved the point by
    ``sqrt(b) dmu dt T`` (O(dmu dt), toward the kernel mean). Nothing else changes: at ``dmu = 0``
    the two points coincide and the sampler is Euler-Maruyama step for step (up to the paper's
    noiseless last step). The final denoising step is the standard one, Tweedie's x0_hat with a
    fresh score at the projected x_{N-1} (a reused score there would not be Tweedie's formula at
    x_{N-1}, method.md section 4).

    The projection is the paper's Tweedie projection evaluated at the diffused point instead of
    at x_pred: the reading that keeps the reuse exact at dmu = 0. Projecting x_pred as the paper
    and reusing ``s(x_pred, t')`` at the next start ``x_proj + noise`` would lag the drift by one
    noise increment, O(sqrt(dt)), at every strength (dmu = 0 would not be Euler-Maruyama).

    NFE: 1 before the first step, then 1 per step (the final denoising step's included): N + 1
    for N steps, with or without ``final_denoise`` (Euler-Maruyama: N). Only the training-free
    (Tweedie) projection can be reused: a learned T outputs a displacement, not a score, and
    would cost its own evaluation; with a mixture's exact ``score_fn`` this is the exact-score
    projection. Passing ``project`` is an error. ``strength`` is dmu (default 1.0, not tuned).
    """
    if project is not None:
        raise ValueError(
            "predict_project_reuse reuses the training-free projection's score evaluation and takes "
            "no projection T; drop the T (or choose predict_project, predict_project_ancestral or "
            "predict_project_renoise)"
        )
    strength = _strength("predict_project_reuse", strength)
    run = SamplerRun(score_fn, sde, x, ts, callback)
    n = run.n
    path = run.brownian(x, generator)
    s = run.score(x, float(run.ts[0]))  # the first predict's score: the one extra NFE
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        dt = t - t_next
        b = float(paper_beta(sde, t))
        x0_hat = run.x0(x, s, t)
        # predict: the reverse drift with the score kept from the last projection
        x_pred = x - (sde.drift(x, t) - 2.0 * b * s) * dt
        # diffuse: the Brownian increment of this step (none after the last, as the paper)
        dw = path.increment(t_next)
        x_diff = x_pred if i == n - 1 else x_pred + math.sqrt(2.0 * b) * dw
        # project: the Tweedie projection at t'; its score is the next predict's
        s = run.score(x_diff, t_next)
        shrink = float(shrink_factor(sde, torch.tensor(t, dtype=torch.float64)))
        x = x_diff + math.sqrt(b) * strength * dt * shrink * float(sde.sigma(t_next)) ** 2 * s
        run.report(i, t_next, x, x0_hat, x_pred=x_pred, x_proj=x)
    return x
