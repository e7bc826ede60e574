"""Wasserstein gradient flows of the VP SDE (method.md section 2, Theorems 1 and 2).

Forward noising under the VP SDE (1) is the beta-accelerated Wasserstein gradient flow of the free
energy ``F(mu) = KL(mu || pi)``, ``pi = N(0, I)``; generation retraces the same curve of measures
as the flow of ``-KL``. This module computes the objects that make this visible and checkable:

* **Free energy** along a path: :func:`free_energy_exact` for Gaussian mixtures (exact cross term,
  entropy by trapezoid quadrature on a 2-D grid, or Monte Carlo with the exact log-density), and
  :func:`free_energy_particles` (Kozachenko-Leonenko k-NN entropy plus the known ``log pi``).
* **Velocity fields** on a grid (:func:`velocity_field`): Theorem 1's Wasserstein gradient
  ``-beta (grad log mu_t + x)`` and Theorem 2's reverse drift ``beta (2 grad log mu_t + x)``.
* **The exact marginal path** of a mixture: :func:`exact_marginal_samples` (particles with a
  coherent identity) and :func:`marginal_density_grid` (contours).
* **The splitting scheme** of Theorem 2's proof as a path generator (:func:`splitting_path`).
* The exact W2 length of a mixture's gradient-flow path (:func:`exact_path_length`).

Elsewhere: Gaussian closed forms in :mod:`geoflow.gaussian`; the blob JKO on particles, its cache,
the shipped preset paths and the theorem check in :mod:`geoflow.jko`; W2 along paths and the W2
geodesic in :mod:`geoflow.metrics`.

Time conventions: ``t`` is the VP time of (1) in ``[0, T]``; ``s = int_0^t beta`` the plain flow
time (Theorem 1's accelerated flow ``d mu / dt = beta(t) div(mu grad log(mu / pi))`` is the plain
flow ``d mu / ds = div(mu grad log(mu / pi))`` reparametrised). Paths are returned as float32
numpy arrays ``(K, n, d)`` (keyframes, particles, dimension), ready to plot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geoflow.densities import Density, GaussianMixture
from geoflow.gaussian import free_energy_gaussian
from geoflow.metrics import MIN_PARTICLES, ArrayLike, _check_particles, _np, knn_entropy
from geoflow.score import ScoreFn, batch_time
from geoflow.sde import SDE, VPSDE, paper_beta, probability_flow_velocity
from geoflow.validate import LIMITS

Bounds = tuple[float, float] | tuple[tuple[float, float], tuple[float, float]]

KNN_K = 5  # k of the Kozachenko-Leonenko estimator (method.md section 4)
VELOCITY_KINDS = ("forward", "reverse_sde", "reverse_ode")
DIRECTIONS = ("forward", "reverse")
FREE_ENERGY_METHODS = ("auto", "grid", "mc")
COUPLINGS = ("sde", "fixed_noise")
_GRID_WORK_LIMIT = 2e8  # grid points x components above which free_energy_exact uses Monte Carlo
_LOG_2PI = math.log(2.0 * math.pi)


# =========================================================================== helpers
def _torch64(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def require_mixture(density: Density | Any, what: str = "an exact path") -> GaussianMixture:
    """Return ``density`` if it is a Gaussian mixture, else a ValueError naming the valid inputs."""
    if isinstance(density, GaussianMixture):
        return density
    name = getattr(density, "name", type(density).__name__)
    from geoflow.densities import PRESETS, get_density

    mixtures = [k for k in PRESETS if isinstance(get_density(k), GaussianMixture)]
    raise ValueError(
        f"{what} needs a Gaussian mixture (exact marginals); {name!r} has none. "
        f"Valid: {', '.join(mixtures)}, a .json mixture spec, or a .csv point cloud"
    )


def _require_vp(sde: SDE) -> VPSDE:
    if not isinstance(sde, VPSDE):
        raise ValueError(
            "the gradient-flow time s = int_0^t beta needs the VP SDE ('vp'), "
            f"got {getattr(sde, 'name', sde)!r}"
        )
    return sde


def flow_time(sde: VPSDE, t: ArrayLike | float) -> np.ndarray:
    """Plain flow time ``s(t) = int_0^t beta`` of VP times t (any shape), float64."""
    return _np(_require_vp(sde).int_beta(_torch64(np.asarray(_np(t)))))


def vp_time(sde: VPSDE, s: ArrayLike | float) -> np.ndarray:
    """Invert :func:`flow_time`: the VP time t in ``[0, T]`` with ``int_0^t beta = s`` (bisection)."""
    sde = _require_vp(sde)
    s_arr = _np(s)
    s_max = float(sde.int_beta(sde.T))
    if np.any(s_arr < -1e-12) or np.any(s_arr > s_max * (1 + 1e-12)):
        raise ValueError(f"flow time s must lie in [0, {s_max:.6g}] (= int_0^T beta), got {s_arr}")
    lo, hi = np.zeros_like(s_arr), np.full_like(s_arr, sde.T)
    for _ in range(100):  # int_beta is increasing: plain bisection to machine precision
        mid = 0.5 * (lo + hi)
        below = _np(sde.int_beta(torch.as_tensor(mid))) < s_arr
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def keyframe_times(keyframes: int | ArrayLike, sde: SDE) -> np.ndarray:
    """VP times of the keyframes: ``K`` evenly spread over ``[0, T]``, or given times checked.

    Args:
        keyframes: an integer ``K >= 2`` or an increasing sequence of times in ``[0, T]``.
        sde: the forward SDE (its ``T`` bounds the path).

    Returns:
        float64 array of shape (K,), strictly increasing.

    Raises:
        ValueError: naming the valid range.
    """
    if isinstance(keyframes, (int, np.integer)) and not isinstance(keyframes, bool):
        if not 2 <= keyframes <= LIMITS.keyframes:
            raise ValueError(
                f"keyframes must be an integer in [2, {LIMITS.keyframes}] or a list of times, got {keyframes}"
            )
        return np.linspace(0.0, sde.T, int(keyframes))
    ts = _np(keyframes).reshape(-1)
    if ts.size < 1:
        raise ValueError("keyframes must hold at least one time")
    if np.any(ts < 0) or np.any(ts > sde.T + 1e-12) or not np.all(np.isfinite(ts)):
        raise ValueError(f"keyframe times must lie in [0, T] = [0, {sde.T}], got {ts.tolist()}")
    if np.any(np.diff(ts) <= 0):
        raise ValueError("keyframe times must be strictly increasing")
    return np.minimum(ts, sde.T)


def _substeps(a: float, b: float, max_step: float) -> tuple[int, float]:
    """Equal sub-steps of size at most ``max_step`` that land exactly on ``b``."""
    span = b - a
    m = max(1, math.ceil(span / max_step - 1e-9))
    return m, span / m


# =========================================================================== mixture log-density
def _quadratic_features(x: torch.Tensor) -> torch.Tensor:
    """``[x_i x_j (i <= j), x_i, 1]``: a Gaussian log-density is linear in these."""
    d = x.shape[1]
    iu = torch.triu_indices(d, d)
    quad = x[:, iu[0]] * x[:, iu[1]]
    return torch.cat([quad, x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)


def _mixture_coefficients(weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
    """Coefficients (F, K) such that ``features(x) @ coef = log w_k + log N(x; m_k, C_k)``."""
    k, d = means.shape
    prec = torch.linalg.inv(covs)
    iu = torch.triu_indices(d, d)
    off = (iu[0] != iu[1]).to(torch.float64)
    quad = -0.5 * prec[:, iu[0], iu[1]] * (1.0 + off)  # x_i x_j appears twice off the diagonal
    lin = torch.einsum("kij,kj->ki", prec, means)
    _, logdet = torch.linalg.slogdet(covs)
    const = (
        torch.log(weights) - 0.5 * torch.einsum("ki,ki->k", means, lin) - 0.5 * logdet - 0.5 * d * _LOG_2PI
    )
    return torch.cat([quad, lin, const[:, None]], 1).T


def _mixture_logpdf(
    x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor, chunk: int = 1 << 16
) -> torch.Tensor:
    """Exact mixture log-density at many points (B, d) -> (B,), in chunks (one matmul per chunk)."""
    coef = _mixture_coefficients(weights, means, covs)
    out = torch.empty(x.shape[0], dtype=torch.float64)
    rows = max(1, int(chunk * 64 // max(1, coef.shape[1])))
    for i in range(0, x.shape[0], rows):
        out[i : i + rows] = torch.logsumexp(_quadratic_features(x[i : i + rows]) @ coef, dim=1)
    return out


def _grid(bounds: Bounds | None, n_grid: int, default: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(n_grid, (int, np.integer)) or n_grid < 2:
        raise ValueError(f"n_grid must be an integer >= 2, got {n_grid!r}")
    b = default if bounds is None else bounds
    if isinstance(b[0], (tuple, list)):
        (x0, x1), (y0, y1) = b  # type: ignore[misc]
    else:
        x0, x1 = b  # type: ignore[misc]
        y0, y1 = x0, x1
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"bounds must be (lo, hi) with lo < hi, got {b}")
    xs = np.linspace(float(x0), float(x1), int(n_grid))
    ys = np.linspace(float(y0), float(y1), int(n_grid))
    return np.meshgrid(xs, ys, indexing="xy")


# =========================================================================== free energy
def _mixture_entropy_grid(w: torch.Tensor, m: torch.Tensor, c: torch.Tensor, max_points: int) -> float:
    """Entropy ``-int p log p`` of a 2-D mixture by the trapezoid rule on a uniform grid.

    The grid spans every component to 9 standard deviations with spacing a quarter of the smallest
    standard deviation; the trapezoid rule is spectrally accurate for such smooth, fast-decaying
    integrands, so the error is far below the Monte Carlo alternative's.
    """
    eig = torch.linalg.eigvalsh(c)
    sd_min, sd_max = float(eig.min().sqrt()), float(eig.max().sqrt())
    lo = (m.min(0).values - 9 * sd_max).numpy()
    hi = (m.max(0).values + 9 * sd_max).numpy()
    step = sd_min / 4
    n = np.ceil((hi - lo) / step).astype(int) + 1
    if n[0] * n[1] > max_points:
        raise ValueError(f"the entropy grid would need {n[0]} x {n[1]} points (limit {max_points})")
    gx, gy = np.linspace(lo[0], hi[0], n[0]), np.linspace(lo[1], hi[1], n[1])
    xx, yy = np.meshgrid(gx, gy, indexing="ij")
    pts = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], 1))
    logp = _mixture_logpdf(pts, w, m, c)
    area = (gx[1] - gx[0]) * (gy[1] - gy[0])
    return float(-(torch.exp(logp) * logp).sum() * area)


def _mixture_entropy_mc(
    w: torch.Tensor, m: torch.Tensor, c: torch.Tensor, n: int, generator: torch.Generator | None
) -> float:
    """Entropy ``-E log p(X)``, X ~ p, with the exact log-density (standard error ~ sd(log p)/sqrt(n))."""
    idx = torch.multinomial(w, n, replacement=True, generator=generator)
    z = torch.randn(n, m.shape[1], generator=generator, dtype=torch.float64)
    x = m[idx] + torch.einsum("nij,nj->ni", torch.linalg.cholesky(c)[idx], z)
    return float(-_mixture_logpdf(x, w, m, c).mean())


def free_energy_exact(
    mixture: GaussianMixture,
    ts: ArrayLike | float,
    sde: SDE,
    *,
    method: str = "auto",
    max_grid_points: int = 4_000_000,
    n_mc: int = 200_000,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Free energy ``F(mu_t) = KL(mu_t || N(0, I))`` of a mixture's exact marginals (method.md eq. (1)).

    ``KL = -H(mu_t) + E|x|^2 / 2 + (d / 2) log(2 pi)``. The cross term is exact
    (``E|x|^2 = sum_k w_k (|a m_k|^2 + tr(a^2 C_k + s^2 I))``); the entropy of a mixture has no
    closed form and is computed by

    * ``"grid"``: trapezoid quadrature of ``-p log p`` on a 2-D grid (d = 2; error ~1e-6 here),
    * ``"mc"``: Monte Carlo ``-mean log p(X)`` over ``n_mc`` exact samples with the exact log-density
      (any d; standard error about ``1 / sqrt(n_mc)``),
    * ``"auto"``: exact closed form for one component, else the grid when d = 2 and the work
      (grid points x components) is moderate, else Monte Carlo (with at most ``2e8 / K`` samples,
      at least 20000, for K components).

    Args:
        mixture: the data distribution (a :class:`GaussianMixture`).
        ts: VP times, a float or shape (K,).
        sde: forward SDE.
        method: one of ``FREE_ENERGY_METHODS``.
        max_grid_points: grid size limit for ``"grid"``.
        n_mc: Monte Carlo sample count for ``"mc"``.
        generator: randomness for ``"mc"``.

    Returns:
        float64 array of shape (K,) (shape () for a float t).
    """
    mixture = require_mixture(mixture, "the exact free energy")
    if method not in FREE_ENERGY_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(FREE_ENERGY_METHODS)}")
    t_arr = _np(ts)
    out = np.empty(t_arr.size)
    d, k = mixture.dim, mixture.weights.numel()
    for i, t in enumerate(t_arr.reshape(-1)):
        m, c = mixture.marginal_params(float(t), sde)
        w = mixture.weights
        cross = 0.5 * float((w * ((m * m).sum(1) + torch.diagonal(c, dim1=1, dim2=2).sum(1))).sum())
        cross += 0.5 * d * _LOG_2PI
        if method == "auto" and k == 1:
            out[i] = free_energy_gaussian(m[0], c[0])
            continue
        use_grid = method == "grid" or (method == "auto" and d == 2)
        if use_grid and method == "auto":
            eig = torch.linalg.eigvalsh(c)
            span = (m.max(0).values - m.min(0).values + 18 * eig.max().sqrt()) / (eig.min().sqrt() / 4)
            use_grid = float(torch.prod(span + 1)) <= max_grid_points and float(torch.prod(span)) * k <= (
                _GRID_WORK_LIMIT
            )
        if use_grid:
            if d != 2:
                raise ValueError(f"method 'grid' needs a 2-D mixture, got d = {d}; use 'mc'")
            ent = _mixture_entropy_grid(w, m, c, max_grid_points)
        else:
            # many components (a point cloud's kernel density): cap the work at ~2e8 kernel terms
            n_eff = n_mc if method == "mc" else min(n_mc, max(20_000, int(_GRID_WORK_LIMIT) // k))
            ent = _mixture_entropy_mc(w, m, c, n_eff, generator)
        out[i] = cross - ent
    return out.reshape(t_arr.shape)


def free_energy_particles(x: ArrayLike, *, k: int = KNN_K) -> float:
    """Free energy ``KL(mu || N(0, I))`` estimated from particles of mu.

    Estimator: ``-H_kNN(x) + mean(|x|^2) / 2 + (d / 2) log(2 pi)`` with the Kozachenko-Leonenko
    k-nearest-neighbour entropy (:func:`geoflow.metrics.knn_entropy`, k = 5) and the known
    ``log pi``. Its bias is that of the entropy estimate (about 0.01 nats at n = 10^4 in 2-D).

    Args:
        x: particles (n, d), n >= max(MIN_PARTICLES, k + 1), distinct.
        k: neighbour rank.
    """
    arr = _check_particles(x, "particles for the k-NN entropy", max(MIN_PARTICLES, k + 1))
    d = arr.shape[1]
    return float(-knn_entropy(arr, k) + 0.5 * np.mean(np.sum(arr * arr, 1)) + 0.5 * d * _LOG_2PI)


# =========================================================================== velocity fields
@dataclass
class VelocityField:
    """A vector field on a grid for quiver plots: arrays of shape (n_grid, n_grid), float32.

    ``X[i, j], Y[i, j]`` is a grid point and ``U, V`` the velocity there; ``kind`` and ``t`` say
    which field at which VP time.
    """

    X: np.ndarray
    Y: np.ndarray
    U: np.ndarray
    V: np.ndarray
    t: float
    kind: str


def _score_callable(score_fn_or_mixture: ScoreFn | GaussianMixture, sde: SDE) -> ScoreFn:
    if isinstance(score_fn_or_mixture, GaussianMixture):
        return score_fn_or_mixture.score_fn(sde)
    if not callable(score_fn_or_mixture):
        raise ValueError("velocity_field needs a score function score(x, t) or a GaussianMixture")
    return score_fn_or_mixture


def velocity_field(
    score_fn_or_mixture: ScoreFn | GaussianMixture,
    sde: SDE,
    t: float,
    bounds: Bounds | None = None,
    n_grid: int = 25,
    kind: str = "forward",
) -> VelocityField:
    """Velocity of the gradient-flow path at VP time t on a regular grid (method.md section 2).

    With ``b = g(t)^2 / 2`` (the paper's ``beta(t)``) and ``f`` the SDE drift:

    * ``"forward"`` (Theorem 1): the Wasserstein gradient velocity ``f - b score``, for the VP SDE
      ``-beta (grad log mu_t + x) = -beta grad log(mu_t / pi)``; particles moving with it follow the
      exact marginals forward in t.
    * ``"reverse_sde"`` (Theorem 2): the reverse drift ``-f + 2 b score = beta (2 grad log mu_t + x)``
      in reverse time tau, the explicit Wasserstein step on G of the splitting (the heat-flow step on
      the entropy adds the noise).
    * ``"reverse_ode"``: the probability-flow velocity in reverse time, ``beta (grad log mu_t + x)``
      (the flow of ``-KL`` without the split; minus the forward field).

    Args:
        score_fn_or_mixture: a mixture (exact score) or any ``score(x, t)`` with t of shape (B,)
            (a trained ``ScoreModel.score_fn()``).
        sde: forward SDE.
        t: VP time in ``[0, T]``; the score is evaluated there (use ``t >= sde.t_min`` for networks).
        bounds: ``(lo, hi)`` for both axes or ``((x0, x1), (y0, y1))``; default the mixture's
            bounds or ``(-4.5, 4.5)``.
        n_grid: grid points per axis (>= 2).
        kind: one of ``VELOCITY_KINDS``.

    Returns:
        :class:`VelocityField` with ``X, Y, U, V`` of shape (n_grid, n_grid).
    """
    if kind not in VELOCITY_KINDS:
        raise ValueError(f"unknown velocity kind {kind!r}; valid: {', '.join(VELOCITY_KINDS)}")
    if not (0.0 <= float(t) <= sde.T):
        raise ValueError(f"t must lie in [0, T] = [0, {sde.T}], got {t}")
    default = score_fn_or_mixture.bounds() if isinstance(score_fn_or_mixture, Density) else (-4.5, 4.5)
    gx, gy = _grid(bounds, n_grid, default)
    score = _score_callable(score_fn_or_mixture, sde)
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    with torch.no_grad():
        s = score(pts, batch_time(float(t), pts)).to(torch.float64)
    x = pts.to(torch.float64)
    if kind == "reverse_sde":
        # Theorem 2's explicit step on G: the reverse SDE's drift -f + 2 beta s
        v = -sde.drift(x, float(t)) + 2.0 * float(paper_beta(sde, float(t))) * s
    else:
        v = probability_flow_velocity(sde, x, float(t), s)  # Theorem 1's velocity
        v = v if kind == "forward" else -v
    v = v.numpy().astype(np.float32)
    shape = gx.shape
    u_, v_ = v[:, 0].reshape(shape), v[:, 1].reshape(shape)
    return VelocityField(gx.astype(np.float32), gy.astype(np.float32), u_, v_, float(t), kind)


# =========================================================================== exact marginal path
@dataclass
class DensityGrid:
    """Density values on a grid for contours: ``P[i, j]`` at ``(X[i, j], Y[i, j])``, float32."""

    X: np.ndarray
    Y: np.ndarray
    P: np.ndarray
    t: float


def marginal_density_grid(
    mixture: GaussianMixture, sde: SDE, t: float, bounds: Bounds | None = None, n_grid: int = 200
) -> DensityGrid:
    """Exact marginal density ``p_t`` of a 2-D mixture on a grid (method.md section 1).

    Args:
        mixture: data distribution (Gaussian mixture; else ValueError).
        sde: forward SDE.
        t: VP time in ``[0, T]``.
        bounds: as in :func:`velocity_field`; default the mixture's bounds.
        n_grid: points per axis.

    Returns:
        :class:`DensityGrid` with arrays of shape (n_grid, n_grid).
    """
    mixture = require_mixture(mixture, "exact density contours")
    if mixture.dim != 2:
        raise ValueError(f"density grids are 2-D; this mixture has d = {mixture.dim}")
    if not (0.0 <= float(t) <= sde.T):
        raise ValueError(f"t must lie in [0, T] = [0, {sde.T}], got {t}")
    gx, gy = _grid(bounds, n_grid, mixture.bounds())
    m, c = mixture.marginal_params(float(t), sde)
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1))
    p = torch.exp(_mixture_logpdf(pts, mixture.weights, m, c)).numpy().reshape(gx.shape)
    return DensityGrid(gx.astype(np.float32), gy.astype(np.float32), p.astype(np.float32), float(t))


def exact_marginal_samples(
    mixture: GaussianMixture,
    sde: SDE,
    ts: ArrayLike | Sequence[float],
    n: int,
    generator: torch.Generator | None = None,
    *,
    coupling: str = "sde",
    x0: ArrayLike | None = None,
) -> np.ndarray:
    """Particles of the exact marginals ``mu_t`` at the times ``ts``, each particle keeping its identity.

    ``coupling="sde"``: exact paths of the SDE sampled at ``ts`` (sorted increasing), by its Gaussian
    transition kernel ``x_t' = (a(t') / a(t)) x_t + sqrt(1 - (a(t') / a(t))^2) z``; the law of the
    whole path is exact, not just each marginal. ``coupling="fixed_noise"``: ``x_t = a(t) x_0 +
    s(t) z`` with one z per particle (smooth, straight-to-the-origin tracks; exact marginals, not
    SDE paths).

    Args:
        mixture: data distribution (Gaussian mixture; a density without exact marginals raises).
        sde: forward SDE.
        ts: increasing VP times in ``[0, T]``, shape (K,).
        n: particle count.
        generator: randomness.
        coupling: one of ``COUPLINGS``.
        x0: optional data particles (n, d) to start from (default: ``mixture.sample(n)``).

    Returns:
        float32 array (K, n, d).
    """
    mixture = require_mixture(mixture, "an exact marginal path")
    if coupling not in COUPLINGS:
        raise ValueError(f"unknown coupling {coupling!r}; valid: {', '.join(COUPLINGS)}")
    t_arr = keyframe_times(ts, sde)
    if x0 is None:
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"particle count n must be a positive integer, got {n!r}")
        x = mixture.sample(int(n), generator).to(torch.float64)
    else:
        x = _torch64(_check_particles(x0, "x0", 1))
    out = np.empty((t_arr.size, x.shape[0], x.shape[1]), dtype=np.float32)
    if coupling == "fixed_noise":
        z = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        for i, t in enumerate(t_arr):
            out[i] = sde.marginal_sample(x, float(t), noise=z).numpy()
        return out
    cur, a_prev, var_prev = x, 1.0, 0.0
    for i, t in enumerate(t_arr):
        a, s = float(sde.alpha(t)), float(sde.sigma(t))
        # transition kernel from the previous time: the ratio of alphas, and the variance that tops
        # the marginal noise up from s_prev^2 to s^2 (VE: alpha = 1, variance difference)
        r = a / a_prev
        var = max(s * s - r * r * var_prev, 0.0)
        z = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        cur = r * cur + math.sqrt(var) * z
        out[i] = cur.numpy()
        a_prev, var_prev = a, s * s
    return out


# =========================================================================== splitting scheme
@dataclass
class FlowPath:
    """A particle path at keyframes: ``particles[k]`` (n, d) at VP time ``t[k]`` (in traversal order)."""

    t: np.ndarray
    particles: np.ndarray
    direction: str
    n_steps: int


def splitting_path(
    x: ArrayLike,
    sde: SDE,
    keyframes: int | ArrayLike = 20,
    *,
    direction: str = "forward",
    score_fn: ScoreFn | GaussianMixture | None = None,
    dt: float = 2e-3,
    generator: torch.Generator | None = None,
) -> FlowPath:
    """The splitting scheme of method.md section 2 as a path generator (Theorems 1 and 2).

    One step of size dt at VP time t, ``b = beta(t)`` (``g(t)^2 / 2``):

    * ``"forward"`` (F = KL = potential energy + negative entropy): explicit Wasserstein step on the
      potential ``int -log pi dmu``, ``y = x - b x dt`` (the SDE drift, ``x + f(x, t) dt``), then
      the JKO step of the negative entropy, whose exact solution is the heat flow
      ``x' = y + sqrt(2 b dt) z``. This is forward Euler-Maruyama; it starts from data at the first
      keyframe time and moves up in t.
    * ``"reverse"`` (F = -KL = G + H): explicit step on ``G = int (-2 log mu + log pi) dmu``,
      ``y = x + b (2 score(x, t) + x) dt`` (``x + (-f + 2 b score) dt``), then the heat flow
      ``x' = y + sqrt(2 b dt) z``. It starts at the last keyframe time (normally T, with x from the
      prior) and moves down in t; no final denoising (this is the paper's scheme, reported as is).

    Args:
        x: starting particles (n, d).
        sde: forward SDE.
        keyframes: ``K`` or increasing VP times in ``[0, T]``.
        direction: ``"forward"`` or ``"reverse"``.
        score_fn: the score of the marginals (reverse only): a mixture (exact) or ``score(x, t)``.
        dt: largest VP time step; each keyframe interval uses equal steps that land on it.
        generator: noise source.

    Returns:
        :class:`FlowPath` with ``t`` increasing (forward) or decreasing (reverse).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    ts = keyframe_times(keyframes, sde)
    cur = torch.as_tensor(_check_particles(x, "x", 1))
    score: ScoreFn | None = None
    if direction == "reverse":
        if score_fn is None:
            raise ValueError("the reverse splitting path needs score_fn (a mixture or score(x, t))")
        score = _score_callable(score_fn, sde)
        ts = ts[::-1].copy()
    frames = [cur.numpy().astype(np.float32)]
    total = 0
    for a, b in zip(ts[:-1], ts[1:], strict=True):
        m, step = _substeps(0.0, abs(float(b) - float(a)), dt)
        total += m
        for j in range(m):
            t = float(a) + (j * step if direction == "forward" else -j * step)
            beta = float(paper_beta(sde, t))
            f = sde.drift(cur, t)
            if direction == "forward":
                # explicit W-step on the potential energy: move with the drift
                y = cur + f * step
            else:
                # explicit W-step on G: the reverse drift with twice the score
                with torch.no_grad():
                    sc = score(cur.float(), batch_time(max(t, 1e-12), cur)).to(torch.float64)  # type: ignore[misc]
                y = cur + (-f + 2.0 * beta * sc) * step
            # JKO step on the negative entropy: the heat flow, exactly
            z = torch.randn(cur.shape, generator=generator, dtype=torch.float64)
            cur = y + math.sqrt(2.0 * beta * step) * z
        frames.append(cur.numpy().astype(np.float32))
    return FlowPath(ts, np.stack(frames), direction, total)


# =========================================================================== path length
def exact_path_length(
    mixture: GaussianMixture,
    sde: VPSDE,
    t0: float = 0.0,
    t1: float | None = None,
    *,
    n_s: int = 200,
    n_mc: int = 4000,
    generator: torch.Generator | None = None,
) -> float:
    """W2 length of the exact gradient-flow path ``t -> mu_t`` of a mixture between VP times t0 and t1.

    Theorem 1's velocity ``v_t = -beta (grad log mu_t + x)`` is a gradient field, hence the curve's
    tangent, so its metric speed is ``||v_t||_{L2(mu_t)}`` and the length is
    ``int ||v_t||_{L2(mu_t)} dt = int ||grad log mu_t + x||_{L2(mu_t)} ds`` in the flow time s.
    Computed by the trapezoid rule on ``n_s`` points in s (quadratically denser at t0), each norm by
    Monte Carlo over ``n_mc`` exact samples (the same x_0 and z at every s, so the integrand is
    smooth). The discrete :func:`geoflow.metrics.path_length` of any path through the same marginals
    approaches it from below; compare with :func:`geoflow.metrics.mccann_geodesic`'s length
    W2(mu_t0, mu_t1).
    """
    mixture = require_mixture(mixture, "the exact path length")
    sde = _require_vp(sde)
    t1 = sde.T if t1 is None else float(t1)
    if not (0.0 <= t0 < t1 <= sde.T):
        raise ValueError(f"need 0 <= t0 < t1 <= T = {sde.T}, got t0={t0}, t1={t1}")
    s0, s1 = float(flow_time(sde, t0)), float(flow_time(sde, t1))
    # denser near s0, where narrow components widen fast and the speed peaks
    s_grid = s0 + (s1 - s0) * np.linspace(0.0, 1.0, int(n_s)) ** 2
    t_grid = vp_time(sde, s_grid)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x0 = mixture.sample(int(n_mc), g).to(torch.float64)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    speed = np.empty(len(t_grid))
    for i, t in enumerate(t_grid):
        x = sde.marginal_sample(x0, float(t), noise=z)
        v = mixture.score(x, float(t), sde).to(torch.float64) + x
        speed[i] = float(v.pow(2).sum(1).mean().sqrt())
    return float(np.trapezoid(speed, s_grid))
