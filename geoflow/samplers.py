"""Samplers as pure functions: ``sample_<name>(score_fn, sde, x, ts, *, ...) -> Tensor``.

Conventions (design.md, k-diffusion style):

* ``score_fn(x, t)`` with t of shape (B,) returns ``grad log p_t(x)``: the exact score of a mixture
  (``GaussianMixture.score_fn(sde)``) and a trained model (``ScoreModel.score_fn()``) are
  interchangeable.
* ``x`` is the initial noise ``x_T`` of shape ``(B, *D)``; ``ts`` the reverse grid of ``N + 1``
  times from T down (``sde.time_grid(N, spacing)``). Shapes never matter: 2-D and images alike.
* ``final_denoise=True`` (default) replaces the last step ``t_{N-1} -> t_N`` by Tweedie's
  ``x0_hat`` at ``t_{N-1}`` with no noise (method.md section 4).
* Stochastic samplers take their noise from one :class:`BrownianPath` per generator, so the same
  seed at a different N discretises the same Brownian path.
* ``callback(info)`` after every step with ``info = {"i", "t", "x", "x0_hat", "nfe"}`` (plus
  ``"x_pred"``, ``"x_proj"`` for the predict-project step); ``t`` is the time reached.
* A NaN or exploding state raises :class:`SamplerDiverged` naming the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch

from geoflow.score import ScoreFn, batch_time, tweedie_x0
from geoflow.sde import SDE, paper_beta, probability_flow_velocity

Callback = Callable[[dict[str, Any]], None]
DIVERGENCE_FACTOR = 1e4


class SamplerDiverged(RuntimeError):
    """A sampler produced NaN/inf or an exploding state; the message names the step."""


class Projection(Protocol):
    """The projection hook of predict-project: ``T(x_pred, t, t_next) -> displacement``.

    ``x_pred`` (B, *D); ``t`` and ``t_next = t - dt`` of shape (B,). ``nfe_per_call`` network
    evaluations are charged per call.
    """

    nfe_per_call: int

    def __call__(self, x_pred: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor: ...


# --------------------------------------------------------------------------- noise
class BrownianPath:
    """One Brownian path on ``[t_end, t_start]``, walked backwards, shared across step counts.

    Increments are drawn on a fine uniform grid of ``n_fine`` intervals in a fixed order; an
    increment over a coarse step is the sum of the fine increments inside it, with a Brownian
    bridge splitting a fine interval that a coarse boundary cuts. Coarse grids whose times are on
    the fine grid (N dividing ``n_fine`` for a uniform grid) therefore see exactly the same path.

    Args:
        shape: shape of one increment, ``(B, *D)``.
        t_start, t_end: the path's time span (``t_start > t_end``).
        generator: the source of randomness (two child seeds are drawn from it).
        n_fine: fine intervals (default 1000).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        t_start: float,
        t_end: float,
        generator: torch.Generator | None = None,
        n_fine: int = 1000,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if not t_start > t_end:
            raise ValueError(f"need t_start > t_end, got {t_start}, {t_end}")
        seeds = torch.randint(0, 2**62, (2,), generator=generator).tolist()
        self._g = torch.Generator(device="cpu").manual_seed(int(seeds[0]))
        self._g_bridge = torch.Generator(device="cpu").manual_seed(int(seeds[1]))
        self.shape, self.dtype, self.device = tuple(shape), dtype, device
        self.t_start, self.t_end, self.n_fine = float(t_start), float(t_end), int(n_fine)
        self._h = (self.t_start - self.t_end) / self.n_fine
        self._j = 0  # index of the fine interval holding the current time
        self._p = self.t_start  # current time
        self._rem = self._draw(self._h)  # increment over [lower end of interval j, p]

    def _knot(self, j: int) -> float:
        return self.t_start - j * self._h if j < self.n_fine else self.t_end

    def _draw(self, var: float, g: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(self.shape, generator=g or self._g, dtype=self.dtype)
        return (z * math.sqrt(max(var, 0.0))).to(self.device)

    def increment(self, t_to: float) -> torch.Tensor:
        """``W(p) - W(t_to)`` from the current time p down to ``t_to`` (variance ``p - t_to``)."""
        t_to = float(t_to)
        if t_to > self._p + 1e-12 or t_to < self.t_end - 1e-9:
            raise ValueError(f"Brownian path walked backwards: at {self._p}, asked for {t_to}")
        tol = 1e-9 * max(1.0, abs(self.t_start))
        total = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        while self._j < self.n_fine - 1 and t_to < self._knot(self._j + 1) - tol:
            total = total + self._rem
            self._j += 1
            self._p = self._knot(self._j)
            self._rem = self._draw(self._h)
        lo = self._knot(self._j + 1)
        span = self._p - lo
        if span <= tol or t_to <= lo + tol:  # consume the whole remainder
            total = total + self._rem
            self._rem = torch.zeros_like(self._rem)
            self._p = lo
            return total
        f = (self._p - t_to) / span  # Brownian bridge split of the remainder
        bridge = self._draw(f * (1 - f) * span, self._g_bridge)
        part = f * self._rem + bridge
        self._rem = self._rem - part
        self._p = t_to
        return total + part


# --------------------------------------------------------------------------- helpers
def _check_inputs(x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    ts = torch.as_tensor(ts, dtype=torch.float64)
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError("ts must be a 1-D grid of at least 2 times (N >= 1 steps)")
    if not bool(torch.all(ts[1:] < ts[:-1])):
        raise ValueError("ts must be strictly decreasing (from T down to t_min)")
    if x.ndim < 2:
        raise ValueError(f"x must be batch-first (B, *D), got shape {tuple(x.shape)}")
    return ts


def _guard(x: torch.Tensor, i: int, t: float, sde: SDE) -> None:
    bound = DIVERGENCE_FACTOR * (1.0 + sde.prior_std())
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        raise SamplerDiverged(f"sampler diverged at step {i + 1} (t={t:.4g}): NaN or inf in the state")
    peak = float(x.abs().max())
    if peak > bound:
        raise SamplerDiverged(
            f"sampler diverged at step {i + 1} (t={t:.4g}): |x| reached {peak:.3g} (limit {bound:.3g})"
        )


def child_generator(generator: torch.Generator | None) -> torch.Generator:
    """A second CPU generator seeded by one draw from ``generator`` (a stream apart from the path's)."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))


def randn_like_on(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise of ``x``'s shape and dtype, drawn on the CPU ``generator``, on ``x``'s device."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


class SamplerRun:
    """Book-keeping shared by all samplers: NFE count, divergence guard, callback."""

    def __init__(
        self, score_fn: ScoreFn, sde: SDE, x: torch.Tensor, ts: torch.Tensor, callback: Callback | None
    ):
        self.score_fn, self.sde, self.callback = score_fn, sde, callback
        self.nfe = 0
        self.ts = _check_inputs(x, ts)
        self.n = self.ts.numel() - 1

    def steps(self):
        """``(i, t, t_next)`` for every step of the grid, times as floats."""
        for i in range(self.n):
            yield i, float(self.ts[i]), float(self.ts[i + 1])

    def brownian(self, x: torch.Tensor, generator: torch.Generator | None) -> BrownianPath:
        """The run's Brownian path over the whole grid (draws its seeds from ``generator``)."""
        return BrownianPath(
            x.shape, float(self.ts[0]), float(self.ts[-1]), generator, dtype=x.dtype, device=x.device
        )

    def score(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.nfe += 1
        return self.score_fn(x, batch_time(t, x))

    def x0(self, x: torch.Tensor, score: torch.Tensor, t: float) -> torch.Tensor:
        return tweedie_x0(x, score, batch_time(t, x), self.sde)

    def report(self, i: int, t: float, x: torch.Tensor, x0_hat: torch.Tensor, **extra: Any) -> None:
        _guard(x, i, t, self.sde)
        if self.callback is not None:
            self.callback({"i": i, "t": float(t), "x": x, "x0_hat": x0_hat, "nfe": self.nfe, **extra})

    def predict(self, x: torch.Tensor, t: float, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The drift part of a reverse-SDE Euler step (method.md section 3's predict, 1 NFE).

        ``x_pred = x - (f(x, t) - 2 b s(x, t)) dt`` with ``b = g(t)^2 / 2``. Returns ``(x_pred, x0_hat)``.
        """
        b = float(paper_beta(self.sde, t))
        s = self.score(x, t)
        return x - (self.sde.drift(x, t) - 2.0 * b * s) * dt, self.x0(x, s, t)

    def project(
        self, project: Projection, x_pred: torch.Tensor, x: torch.Tensor, t: float, t_next: float
    ) -> torch.Tensor:
        """The projection hook's ``T(x_pred, t, t_next)`` (times batched like ``x``), its NFE counted."""
        out = project(x_pred, batch_time(t, x), batch_time(t_next, x))
        self.nfe += project.nfe_per_call
        return out

    def alpha_sigma(self, t: float, t_next: float) -> tuple[float, float, float, float]:
        """``(alpha(t), sigma(t), alpha(t_next), sigma(t_next))`` of the run's SDE, as floats."""
        sde = self.sde
        return float(sde.alpha(t)), float(sde.sigma(t)), float(sde.alpha(t_next)), float(sde.sigma(t_next))

    def final(self, i: int, x: torch.Tensor, t: float) -> torch.Tensor:
        """The standard final denoising step: ``x <- x0_hat(x, t)``, reported at t = 0."""
        x0 = self.x0(x, self.score(x, t), t)
        self.report(i, 0.0, x0, x0)
        return x0


# --------------------------------------------------------------------------- samplers
@torch.no_grad()
def sample_euler_maruyama(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reverse-SDE Euler-Maruyama (1 NFE per step).

    Step t -> t - dt with ``b = g(t)^2 / 2`` (the paper's beta), method.md section 3 without the
    projection:

        predict:  x_pred = x - (f(x, t) - 2 b s(x, t)) dt
        diffuse:  x = x_pred + sqrt(2 b) dW                   (dW from the Brownian path)

    Args:
        score_fn: ``s(x, t)``, x of shape (B, *D), t of shape (B,).
        sde: forward SDE (drift, diffusion, alpha, sigma).
        x: initial noise x_T, (B, *D).
        ts: reverse grid (N + 1,), decreasing.
        final_denoise: replace the last step by Tweedie's x0_hat.
        callback: per-step report.
        generator: noise source.

    Returns:
        samples, shape of x.
    """
    return euler_maruyama_steps(
        score_fn, sde, x, ts, final_denoise=final_denoise, callback=callback, generator=generator
    )


def euler_maruyama_steps(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    project: Projection | None = None,
    strength: float = 0.0,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The Euler-Maruyama loop with an optional projection hook (the paper's predict-project step).

    With ``project``: ``x_proj = x_pred + sqrt(b) * strength * dt * T(x_pred, t, t - dt)`` between
    predict and diffuse, and no noise after the last step (the paper's reading). Shared by
    :func:`sample_euler_maruyama` and ``geoflow.predict_project.sample_predict_project``, so that
    ``strength = 0`` is Euler-Maruyama step for step.
    """
    run = SamplerRun(score_fn, sde, x, ts, callback)
    n = run.n
    path = run.brownian(x, generator)
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        dt = t - t_next
        b = float(paper_beta(sde, t))
        # predict: one Euler step of the reverse drift
        x_pred, x0_hat = run.predict(x, t, dt)
        extra: dict[str, Any] = {}
        x_proj = x_pred
        if project is not None:
            # project: pull toward the gradient-flow path at t - dt
            x_proj = x_pred + math.sqrt(b) * strength * dt * run.project(project, x_pred, x, t, t_next)
            extra = {"x_pred": x_pred, "x_proj": x_proj}
        # diffuse: the Brownian increment of this step
        dw = path.increment(t_next)
        last = i == n - 1
        x = x_proj if (last and project is not None) else x_proj + math.sqrt(2.0 * b) * dw
        run.report(i, t_next, x, x0_hat, **extra)
    return x


@torch.no_grad()
def sample_ode_euler(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Probability-flow ODE ``dx/dt = f(x, t) - g(t)^2 s(x, t) / 2`` by explicit Euler (1 NFE/step).

    For the VP SDE this is method.md's ``dx/dtau = beta (s + x)``. Deterministic: ``generator``
    is accepted for a uniform signature and unused.
    """
    return _ode(score_fn, sde, x, ts, heun=False, final_denoise=final_denoise, callback=callback)


@torch.no_grad()
def sample_ode_heun(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Probability-flow ODE by Heun's 2nd-order method (EDM Algorithm 1; 2 NFE per step)."""
    return _ode(score_fn, sde, x, ts, heun=True, final_denoise=final_denoise, callback=callback)


def _ode_velocity(run: SamplerRun, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    s = run.score(x, t)
    return probability_flow_velocity(run.sde, x, t, s), run.x0(x, s, t)


def _ode(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    heun: bool,
    final_denoise: bool,
    callback: Callback | None,
) -> torch.Tensor:
    run = SamplerRun(score_fn, sde, x, ts, callback)
    n = run.n
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        dt = t - t_next
        v, x0_hat = _ode_velocity(run, x, t)
        x_euler = x - v * dt
        if heun:
            # correct with the slope at the Euler point (trapezoidal rule)
            v2, _ = _ode_velocity(run, x_euler, t_next)
            x = x - 0.5 * (v + v2) * dt
        else:
            x = x_euler
        run.report(i, t_next, x, x0_hat)
    return x


@torch.no_grad()
def sample_ddim(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    eta: float = 0.0,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DDIM (Song, Meng & Ermon 2021) for any ``x_t = alpha x_0 + sigma eps``; 1 NFE per step.

    ``x_next = a' x0_hat + sqrt(s'^2 - c^2) eps_hat + c z`` with ``c = eta * s' * sqrt(1 - r^2 s'^2/s^2) ...``
    precisely ``c^2 = eta^2 s'^2 (s^2 - r^2 s'^2) / s^2``, ``r = a / a'`` (the DDPM posterior
    variance times eta^2). eta = 0 is deterministic; eta = 1 is ancestral DDPM sampling.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    run = SamplerRun(score_fn, sde, x, ts, callback)
    n = run.n
    path = run.brownian(x, generator)
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        a, s, a2, s2 = run.alpha_sigma(t, t_next)
        sc = run.score(x, t)
        x0_hat = run.x0(x, sc, t)
        eps_hat = (x - a * x0_hat) / s
        r = a / a2
        c2 = eta**2 * s2**2 * max(s**2 - r**2 * s2**2, 0.0) / s**2
        c2 = min(c2, s2**2)
        dw = path.increment(t_next)
        z = dw / math.sqrt(t - t_next)
        x = a2 * x0_hat + math.sqrt(s2**2 - c2) * eps_hat + math.sqrt(c2) * z
        run.report(i, t_next, x, x0_hat)
    return x


@torch.no_grad()
def sample_dpm_solver_pp_2m(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), data prediction, multistep; 1 NFE per step.

    With ``lambda = log(alpha / sigma)``, ``h = lambda' - lambda``:
    ``x' = (s'/s) x - a' (e^{-h} - 1) D`` with ``D = x0_hat`` on the first step and
    ``D = (1 + 1/(2r)) x0_hat - x0_prev / (2r)``, ``r = h_prev / h``, afterwards.
    Deterministic; best with ``spacing="logsnr"``.
    """
    run = SamplerRun(score_fn, sde, x, ts, callback)
    n = run.n
    x0_prev: torch.Tensor | None = None
    h_prev = 0.0
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        a, s, a2, s2 = run.alpha_sigma(t, t_next)
        x0_hat = run.x0(x, run.score(x, t), t)
        h = math.log(a2 / s2) - math.log(a / s)
        if x0_prev is None:
            d = x0_hat
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0_hat - x0_prev / (2 * r)
        x = (s2 / s) * x - a2 * math.expm1(-h) * d
        x0_prev, h_prev = x0_hat, h
        run.report(i, t_next, x, x0_hat)
    return x


def _unipc_rhos_c(hh: float, r1: float | None) -> tuple[float, float]:
    """UniC's weights ``(rho_1, rho_c)`` for bh2 (``B = e^hh - 1``), ``hh = -h``.

    Order 1 (``r1`` None): ``(0, 1/2)``, the reference's simplification (the small-h limit of the
    solve). Order 2: the 2x2 system ``rho_1 + rho_c = g_1``, ``r1 rho_1 + rho_c = g_2`` with
    ``g_k = k! phi_{k+1}(hh) / B``, ``phi_2 = (e^hh - 1) / hh - 1``, ``phi_3 = phi_2 / hh - 1/2``.
    """
    if r1 is None:
        return 0.0, 0.5
    big_b = math.expm1(hh)
    phi2 = big_b / hh - 1.0
    phi3 = phi2 / hh - 0.5
    g1, g2 = phi2 / big_b, 2.0 * phi3 / big_b
    rho1 = (g1 - g2) / (1.0 - r1)
    return rho1, g1 - rho1


@torch.no_grad()
def sample_unipc(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """UniPC (Zhao et al. 2023, arXiv 2302.04867): bh2, order 2, data prediction, multistep; 1 NFE/step.

    With ``lambda = log(alpha / sigma)``, ``h_i = lambda_i - lambda_{i-1}``, ``B(h) = e^{-h} - 1``
    (bh2: the paper's ``B(h) = e^h - 1`` in the data-prediction sign) and ``m_i = x0_hat(x_i, t_i)``
    the one model evaluation of step i:

        UniP-2 (predictor, t_i -> t_{i+1}; order 1 on the first step):
            D_1 = (m_{i-1} - m_i) / r,  r = (lambda_{i-1} - lambda_i) / h_{i+1}
            x_{i+1} = (s'/s) x_i - a' B(h_{i+1}) (m_i + D_1 / 2)
        UniC-p (corrector of x_i, run once m_i is known; p = the order of the predictor that made x_i):
            x_i <- (s_i/s_{i-1}) x_{i-1} - a_i B(h_i) (m_{i-1} + rho_1 D_1 + rho_c (m_i - m_{i-1}))

    where ``x_{i-1}`` is the corrected state the predictor started from and ``rho`` solve the
    order conditions (:func:`_unipc_rhos_c`; ``rho = (0, 1/2)`` for p = 1). The corrector reuses
    ``m_i``, evaluated at the *uncorrected* ``x_i``, as the model output at t_i for the next
    predictor: no extra NFE. UniP-2 with bh2 is DPM-Solver++(2M)'s step; the corrector is UniPC's.
    As in the reference (and diffusers' ``UniPCMultistepScheduler``): the final step gets no
    corrector (its model value is never evaluated) and, with ``lower_order_final``, is first order.

    With ``final_denoise`` the last step is Tweedie's x0_hat at the predictor's ``x_{N-1}``: its
    model value ``m_{N-1}`` itself (diffusers' ``final_sigmas_type="zero"``). The callback's ``x``
    at t_{i+1} is the predictor's value (its correction waits for the next model evaluation).
    Deterministic; meant for ``spacing="logsnr"``. Works for any ``alpha`` (VP, VE) and shape.
    """
    run = SamplerRun(score_fn, sde, x, ts, callback)
    n = run.n
    x_last, s_last = x, 1.0  # the corrected state the last predictor started from, its sigma
    m_hist: list[torch.Tensor] = []  # model values m at the last two grid times
    lam_hist: list[float] = []
    order_last = 0  # order of the predictor that produced x (0: none yet)
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        a, s, a2, s2 = run.alpha_sigma(t, t_next)
        lam, lam2 = math.log(a / s), math.log(a2 / s2)
        m = run.x0(x, run.score(x, t), t)
        if order_last > 0:
            # correct (UniC): redo the last step with the model value at its end point
            m0, lam0 = m_hist[-1], lam_hist[-1]
            hh = -(lam - lam0)
            r1 = (lam_hist[-2] - lam0) / (lam - lam0) if order_last == 2 else None
            rho1, rho_c = _unipc_rhos_c(hh, r1)
            corr = rho_c * (m - m0)
            if r1 is not None:
                corr = corr + rho1 * (m_hist[-2] - m0) / r1
            x = (s / s_last) * x_last - a * math.expm1(hh) * (m0 + corr)
        m_hist, lam_hist = [*m_hist[-1:], m], [*lam_hist[-1:], lam]
        # predict (UniP): multistep exponential-integrator step in lambda
        order = 1 if (i == 0 or i == n - 1) else 2
        h = lam2 - lam
        d = m
        if order == 2:
            r = (lam_hist[-2] - lam) / h
            d = m + 0.5 * (m_hist[-2] - m) / r
        x_last, s_last, order_last = x, s, order
        x = (s2 / s) * x - a2 * math.expm1(-h) * d
        run.report(i, t_next, x, m)
    return x


@torch.no_grad()
def sample_predictor_corrector(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    snr: float = 0.1,
    n_corrector: int = 1,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Predictor-corrector (Song et al. 2021, Alg. 1): Langevin corrector at t, then an EM predictor.

    Corrector step size ``eps = 2 (snr mean||z|| / mean||s||)^2`` (batch means, as score_sde);
    ``x <- x + eps s + sqrt(2 eps) z``.
    NFE: ``1 + n_corrector`` per step. Corrector noise is separate from the predictor's Brownian path.
    """
    if snr <= 0 or n_corrector < 0:
        raise ValueError(f"need snr > 0 and n_corrector >= 0, got {snr}, {n_corrector}")
    run = SamplerRun(score_fn, sde, x, ts, callback)
    n = run.n
    path = run.brownian(x, generator)
    g_corr = child_generator(generator)
    for i, t, t_next in run.steps():
        # correct: Langevin MCMC toward p_t at the current noise level
        for _ in range(n_corrector):
            s = run.score(x, t)
            z = randn_like_on(x, g_corr)
            ratio = z.flatten(1).norm(dim=1).mean() / s.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
            step = float(2.0 * (snr * ratio) ** 2)
            x = x + step * s + math.sqrt(2.0 * step) * z
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        # predict: reverse-SDE Euler-Maruyama step
        dt = t - t_next
        x_pred, x0_hat = run.predict(x, t, dt)
        x = x_pred + math.sqrt(2.0 * float(paper_beta(sde, t))) * path.increment(t_next)
        run.report(i, t_next, x, x0_hat)
    return x


@torch.no_grad()
def sample_annealed_langevin(
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    step_scale: float = 0.5,
    n_steps_each: int = 1,
    final_denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019), meant for the VE SDE.

    Noise levels ``sigma_i = sigma(ts[i])``, i < N; at each, ``n_steps_each`` Langevin steps
    ``x <- x + (e_i / 2) s(x, t_i) + sqrt(e_i) z`` with ``e_i = step_scale * sigma_i^2``
    (NCSN's ``e * sigma_i^2 / sigma_L^2`` with the ratio fixed per level). NFE = N * n_steps_each
    (the last level is Tweedie's x0_hat with ``final_denoise``).
    """
    if step_scale <= 0 or n_steps_each < 1:
        raise ValueError(f"need step_scale > 0 and n_steps_each >= 1, got {step_scale}, {n_steps_each}")
    run = SamplerRun(score_fn, sde, x, ts, callback)
    n = run.n
    g_noise = child_generator(generator)
    for i, t, t_next in run.steps():
        if final_denoise and i == n - 1:
            return run.final(i, x, t)
        sig = float(sde.sigma(t))
        e = step_scale * sig * sig
        x0_hat = x
        for k in range(n_steps_each):
            s = run.score(x, t)
            if k == 0:
                x0_hat = run.x0(x, s, t)
            z = randn_like_on(x, g_noise)
            x = x + 0.5 * e * s + math.sqrt(e) * z
        run.report(i, t_next, x, x0_hat)
    return x
