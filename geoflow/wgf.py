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
* **JKO on particles** (:func:`jko_path`): the minimizing-movement scheme of step h in the plain
  flow time ``s(t) = int_0^t beta``, with the blob entropy (Carrillo, Craig & Patacchini 2019).
* **The splitting scheme** of Theorem 2's proof as a path generator (:func:`splitting_path`).
* **W2 along paths** (:func:`w2_along`, :func:`w2_steps`, :func:`path_length`), the exact W2 length
  of a mixture's gradient-flow path (:func:`exact_path_length`), and the true W2 geodesic
  (:func:`mccann_geodesic`), all transport by exact optimal transport (POT).
* **Shipped paths**: :func:`preset_jko_path` serves the mixture presets' JKO paths from
  ``pretrained/flows/`` instantly (written by :func:`write_preset_flows`).
* :func:`theorem_check`: a numerical check of Theorems 1 and 2 as a table.

Time conventions: ``t`` is the VP time of (1) in ``[0, T]``; ``s = int_0^t beta`` the plain flow
time (Theorem 1's accelerated flow ``d mu / dt = beta(t) div(mu grad log(mu / pi))`` is the plain
flow ``d mu / ds = div(mu grad log(mu / pi))`` reparametrised). Paths are returned as float32
numpy arrays ``(K, n, d)`` (keyframes, particles, dimension), ready to plot.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ot
import torch

from geoflow.densities import Density, GaussianMixture
from geoflow.metrics import exact_w2, knn_entropy
from geoflow.score import batch_time
from geoflow.sde import SDE, VPSDE

ArrayLike = np.ndarray | torch.Tensor
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Bounds = tuple[float, float] | tuple[tuple[float, float], tuple[float, float]]

MIN_PARTICLES = 10  # fewest particles for a blob entropy or a k-NN entropy estimate
MAX_JKO_PARTICLES = 5000  # the blob entropy is O(n^2) per evaluation (n = 5000: 200 MB per kernel)
KNN_K = 5  # k of the Kozachenko-Leonenko estimator (method.md section 4)
VELOCITY_KINDS = ("forward", "reverse_sde", "reverse_ode")
DIRECTIONS = ("forward", "reverse")
FREE_ENERGY_METHODS = ("auto", "grid", "mc")
COUPLINGS = ("sde", "fixed_noise")
_GRID_WORK_LIMIT = 2e8  # grid points x components above which free_energy_exact uses Monte Carlo
_LOG_2PI = math.log(2.0 * math.pi)


# =========================================================================== helpers
def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _torch64(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _check_particles(x: ArrayLike, what: str = "particles", min_n: int = MIN_PARTICLES) -> np.ndarray:
    arr = _np(x)
    if arr.ndim != 2:
        raise ValueError(f"{what} must have shape (n, d), got {arr.shape}")
    if arr.shape[0] < min_n:
        raise ValueError(f"{what}: need at least {min_n} particles, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


def _check_path(p: ArrayLike, what: str) -> np.ndarray:
    arr = _np(p)
    if arr.ndim != 3 or arr.shape[1] < 1:
        raise ValueError(f"{what} must have shape (K, n, d), got {arr.shape}")
    return arr


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


def _beta(sde: SDE, t: float) -> float:
    """``g(t)^2 / 2``: the paper's beta(t) for the VP SDE (and its analogue for any SDE)."""
    return 0.5 * float(sde.diffusion(t)) ** 2


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
        if keyframes < 2:
            raise ValueError(f"keyframes must be an integer >= 2 or a list of times, got {keyframes}")
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


# =========================================================================== Gaussian closed forms
def gaussian_kl(m1: ArrayLike, c1: ArrayLike, m2: ArrayLike, c2: ArrayLike) -> float:
    """``KL(N(m1, C1) || N(m2, C2)) = (tr(C2^-1 C1) + |m2 - m1|^2_{C2^-1} - d + log det C2/det C1) / 2``."""
    m1, c1, m2, c2 = _np(m1), _np(c1), _np(m2), _np(c2)
    d = m1.size
    c2inv = np.linalg.inv(c2)
    diff = m2 - m1
    _, ld1 = np.linalg.slogdet(c1)
    _, ld2 = np.linalg.slogdet(c2)
    return float(0.5 * (np.trace(c2inv @ c1) + diff @ c2inv @ diff - d + ld2 - ld1))


def bures_w2(m1: ArrayLike, c1: ArrayLike, m2: ArrayLike, c2: ArrayLike) -> float:
    """W2 between Gaussians: ``sqrt(|m1 - m2|^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2))`` (Bures)."""
    a, b = _np(c1), _np(c2)
    lam, vec = np.linalg.eigh(b)
    root_b = (vec * np.sqrt(np.clip(lam, 0, None))) @ vec.T
    mid = np.linalg.eigvalsh(root_b @ a @ root_b)  # symmetric PSD: its square root's trace is sum sqrt(eig)
    cross = float(np.sqrt(np.clip(mid, 0, None)).sum())
    d2 = float(np.sum((_np(m1) - _np(m2)) ** 2) + np.trace(a) + np.trace(b) - 2 * cross)
    return math.sqrt(max(d2, 0.0))


def ou_gaussian(mean: ArrayLike, cov: ArrayLike, sde: SDE, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance at time t of the SDE started at ``N(mean, cov)``.

    Solves the moment ODEs of (1), ``dm/dt = -beta m``, ``dC/dt = -2 beta C + 2 beta I``, in closed
    form: ``m_t = a(t) m``, ``C_t = a(t)^2 C + s(t)^2 I``.
    """
    a, s = float(sde.alpha(t)), float(sde.sigma(t))
    m, c = _np(mean), _np(cov)
    return a * m, a * a * c + s * s * np.eye(m.size)


def jko_step_gaussian(mean: ArrayLike, cov: ArrayLike, h: float) -> tuple[np.ndarray, np.ndarray]:
    """The exact JKO step of ``F = KL(. || N(0, I))`` from ``N(mean, cov)`` with step h.

    The minimizer of ``F(mu) + W2^2(mu, N(m, C)) / (2h)`` is Gaussian (its optimality condition
    ``(T(x) - x) / h = -grad log(mu' / pi)(T(x))`` is solved by an affine map ``T``). Mean:
    ``m' = m / (1 + h)`` (implicit Euler). In the eigenbasis of C, ``T`` scales eigenvalue c by
    ``a = (c + sqrt(c^2 + 4 c h (1 + h))) / (2 c (1 + h))`` and ``c' = a^2 c``.
    """
    if not h > 0:
        raise ValueError(f"JKO step h must be > 0, got {h}")
    m, c = _np(mean), _np(cov)
    lam, vec = np.linalg.eigh(c)
    a = (lam + np.sqrt(lam * lam + 4 * lam * h * (1 + h))) / (2 * lam * (1 + h))
    return m / (1 + h), (vec * (a * a * lam)) @ vec.T


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
def free_energy_gaussian(mean: ArrayLike, cov: ArrayLike) -> float:
    """``KL(N(m, C) || N(0, I)) = (tr C + |m|^2 - d - log det C) / 2`` (closed form)."""
    m = _np(mean)
    return gaussian_kl(m, cov, np.zeros_like(m), np.eye(m.size))


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


def _blob_energy_grad(y: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_i log r_i`` with ``r_i = sum_j exp(-|y_i - y_j|^2 / (2 eps^2))``, and its gradient (n, d).

    ``d/dy_k sum_i log r_i = -(1 / eps^2) sum_j A_kj (y_k - y_j)`` with
    ``A_kj = K_kj (1 / r_k + 1 / r_j)``: the blob method's ``grad (log(phi * mu) + phi * (mu / phi * mu))``.
    Written by hand (autograd through the pairwise matrix is 20x slower): K is symmetric, so every
    sum over j is one product ``K @ [y / r, 1 / r, y]`` and A is never formed.
    """
    d = y.shape[1]
    ys = y / eps
    half_sq = 0.5 * (ys * ys).sum(1)
    # K_ij = exp(y_i.y_j - |y_i|^2/2 - |y_j|^2/2) in units of eps; clamp guards rounding above 0
    kern = torch.addmm(-half_sq[None, :], ys, ys.T).sub_(half_sq[:, None]).clamp_(max=0.0).exp_()
    r = kern.sum(1)
    inv_r = 1.0 / r
    km = kern @ torch.cat([y * inv_r[:, None], inv_r[:, None], y], 1)
    a_y = km[:, :d] + km[:, d + 1 :] * inv_r[:, None]  # sum_j A_kj y_j
    a_sum = km[:, d] + 1.0  # sum_j A_kj = (K (1/r))_k + r_k / r_k
    grad = -(a_sum[:, None] * y - a_y) / (eps * eps)
    return torch.log(r).sum(), grad


def blob_free_energy(x: ArrayLike, eps: float) -> float:
    """Free energy of the Gaussian-mollified empirical measure (the blob method's functional).

    ``F_eps(mu_n) = (1/n) sum_i log((phi_eps * mu_n)(x_i)) + mean |x_i|^2 / 2 + (d/2) log(2 pi)``,
    ``phi_eps = N(0, eps^2 I)`` (Carrillo, Craig & Patacchini 2019): the functional that
    :func:`jko_path` minimises.
    """
    arr = _check_particles(x, "particles for the blob entropy")
    if not eps > 0:
        raise ValueError(f"blob bandwidth eps must be > 0, got {eps}")
    n, d = arr.shape
    val, _ = _blob_energy_grad(torch.as_tensor(arr), float(eps))
    ent_term = float(val) / n - math.log(n) - 0.5 * d * math.log(2 * math.pi * eps * eps)
    return ent_term + 0.5 * float(np.mean(np.sum(arr * arr, 1))) + 0.5 * d * _LOG_2PI


def blob_bandwidth(x: ArrayLike, scale: float = 1.0) -> float:
    """Default blob bandwidth: ``scale`` times the median distance to the 5th nearest neighbour.

    Tied to the local particle spacing so the mollifier resolves narrow mixture components at
    t = 0 and widens as the particles spread toward N(0, I).
    """
    from scipy.spatial import cKDTree

    arr = _np(x)
    k = min(KNN_K, arr.shape[0] - 1)
    dist, _ = cKDTree(arr).query(arr, k=k + 1)
    return float(scale * np.median(dist[:, -1]))


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
    f = sde.drift(x, float(t))
    b = _beta(sde, float(t))
    if kind == "forward":
        v = f - b * s
    elif kind == "reverse_sde":
        v = -f + 2.0 * b * s
    else:
        v = -f + b * s
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
            out[i] = (float(sde.alpha(t)) * x + float(sde.sigma(t)) * z).numpy()
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


# =========================================================================== JKO
@dataclass
class JKOPath:
    """A JKO path of ``F = KL(. || N(0, I))`` at its keyframes (see :func:`jko_path`).

    Attributes:
        t: (K,) VP times of the keyframes.
        s: (K,) plain flow times ``int_0^t beta``.
        particles: (K, n, d) float32 particle positions (same particle order in every frame).
        free_energy: (K,) ``KL(mu || pi)`` by the k-NN estimator (:func:`free_energy_particles`).
            It reads low (about -0.15 at t = T for n = 1000, where the truth is 0): the estimator
            assumes i.i.d. points, and JKO particles are more evenly spread than i.i.d. ones.
        free_energy_blob: (K,) the blob functional the scheme minimises (:func:`blob_free_energy`);
            close to the exact value once mixture components are wider than the bandwidth.
        displacement: (K - 1,) per keyframe interval, the sum over JKO steps of
            ``sqrt(mean |y_i - x_i|^2)``: the identity-coupling length (an upper bound of the W2 length).
        coupling_gap: (K - 1,) for the first JKO step of each interval, identity-coupling cost
            minus POT's exact W2^2 (>= 0; ~0 means the identity coupling was optimal); NaN if unchecked.
        n_steps: (K - 1,) JKO steps per interval (each of size at most h in s).
        bandwidth: (K - 1,) blob bandwidth used in each interval.
        iterations: total objective evaluations of the L-BFGS solves (the cost driver).
        h: the step bound in s.
        seconds: wall time of the computation (0 when served from the cache).
    """

    t: np.ndarray
    s: np.ndarray
    particles: np.ndarray
    free_energy: np.ndarray
    free_energy_blob: np.ndarray
    displacement: np.ndarray
    coupling_gap: np.ndarray
    n_steps: np.ndarray
    bandwidth: np.ndarray
    iterations: int
    h: float
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_arrays(self, prefix: str = "jko_") -> dict[str, np.ndarray]:
        """Arrays for ``np.savez`` (``particles`` under ``prefix.rstrip('_')``)."""
        return {
            prefix.rstrip("_"): self.particles,
            f"{prefix}s": self.s,
            f"{prefix}free_energy_blob": self.free_energy_blob,
            f"{prefix}displacement": self.displacement,
            f"{prefix}coupling_gap": self.coupling_gap,
            f"{prefix}n_steps": self.n_steps,
            f"{prefix}bandwidth": self.bandwidth,
        }


def _lbfgs(
    fun: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    y: torch.Tensor,
    h0: float,
    max_iter: int,
    tol: float,
    history: int = 10,
) -> tuple[torch.Tensor, int]:
    """Minimise ``fun`` (value, gradient) by L-BFGS with Armijo backtracking; returns (argmin, evaluations).

    ``h0`` is the initial inverse-Hessian scale. torch.optim.LBFGS's first step is ``1 / |g|_1``,
    which with thousands of coordinates wastes a dozen evaluations; here the first step uses the
    known curvature of the transport term instead, and later ones the usual ``s.y / y.y``.
    """
    f, g = fun(y)
    evals = 1
    hist: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    for _ in range(max_iter):
        if float(g.pow(2).sum(1).mean().sqrt()) < tol:  # RMS of the per-particle gradients
            break
        # two-loop recursion: d = -H g
        q = g.clone()
        alphas = []
        for s_, y_, rho in reversed(hist):
            a_ = rho * float((s_ * q).sum())
            alphas.append(a_)
            q.sub_(a_ * y_)
        gamma = h0
        if hist:
            s_, y_, _ = hist[-1]
            gamma = float((s_ * y_).sum() / (y_ * y_).sum())
        r = gamma * q
        for (s_, y_, rho), a_ in zip(hist, reversed(alphas), strict=True):
            r.add_(s_ * (a_ - rho * float((y_ * r).sum())))
        d = -r
        gd = float((g * d).sum())
        if gd >= 0:  # not a descent direction (non-convex curvature): restart from scaled gradient
            hist.clear()
            d = -h0 * g
            gd = float((g * d).sum())
        step = 1.0
        while True:
            y_new = y + step * d
            f_new, g_new = fun(y_new)
            evals += 1
            if f_new <= f + 1e-4 * step * gd or step < 1e-6:
                break
            step *= 0.5
        s_, y_ = y_new - y, g_new - g
        sy = float((s_ * y_).sum())
        if sy > 1e-12:
            hist.append((s_, y_, 1.0 / sy))
            if len(hist) > history:
                hist.pop(0)
        y, f, g = y_new, f_new, g_new
    return y, evals


def jko_step(
    x: torch.Tensor,
    h: float,
    eps: float,
    *,
    y0: torch.Tensor | None = None,
    max_iter: int = 60,
    tol: float = 1e-3,
) -> tuple[torch.Tensor, int]:
    """One blob-JKO step: ``argmin_y F_eps(y) + (1 / 2h) mean |y_i - x_i|^2`` over particle positions.

    ``F_eps`` is :func:`blob_free_energy`. The transport term uses the identity coupling, which is
    the optimal one for small h (and an upper bound of ``W2^2`` otherwise; :func:`jko_path` checks
    the gap with POT). Minimised by L-BFGS on ``n`` times the objective with the analytic blob
    gradient; the optimality condition is the implicit Euler step
    ``(y_i - x_i) / h = -(grad_i blob + y_i)`` of the particle velocity ``-grad log(mu / pi)``.

    Args:
        x: (n, d) float64 particles of ``mu_k``.
        h: step in the plain flow time s.
        eps: blob bandwidth.
        y0: initial guess (default x); :func:`jko_path` passes the previous step's velocity
            extrapolated, which saves iterations.
        max_iter: L-BFGS iteration cap.
        tol: stop when the root-mean-square per-particle gradient is below ``tol`` (the particle
            displacement error is then about ``h * tol``).

    Returns:
        ``(y, evaluations)`` with y of shape (n, d), float64, and the objective evaluations used.
    """
    if not h > 0:
        raise ValueError(f"JKO step h must be > 0, got {h}")
    inv_h = 1.0 / h

    def fun(y: torch.Tensor) -> tuple[float, torch.Tensor]:
        val, grad = _blob_energy_grad(y, eps)
        diff = y - x
        obj = float(val) + 0.5 * float((y * y).sum()) + 0.5 * inv_h * float((diff * diff).sum())
        return obj, grad + y + inv_h * diff

    start = x if y0 is None else y0
    return _lbfgs(fun, start.clone(), 1.0 / (1.0 + inv_h), max_iter, tol)


PRECOMPUTED_DIR = Path(__file__).resolve().parents[1] / "pretrained" / "flows"
PRESET_FLOW = {"n": 1000, "keyframes": 20, "h": 0.1, "seed": 0}  # the inputs shipped precomputed
_MEMO: OrderedDict[str, JKOPath] = OrderedDict()
_MEMO_SIZE = 32


def _cache_key(x0: np.ndarray, payload: dict[str, Any]) -> str:
    hsh = hashlib.sha256()
    hsh.update(np.ascontiguousarray(x0, dtype=np.float64).tobytes())
    hsh.update(str(x0.shape).encode())
    hsh.update(json.dumps(payload, sort_keys=True, default=str).encode())
    return hsh.hexdigest()[:32]


def _save_path(path: JKOPath, file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v) for k, v in path.__dict__.items() if isinstance(v, np.ndarray)}
    scalars = {"iterations": path.iterations, "h": path.h, "meta": path.meta}
    tmp = file.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, scalars=np.array(json.dumps(scalars)), **arrays)
    tmp.replace(file)


def _load_path(file: Path) -> JKOPath:
    with np.load(file) as z:
        scalars = json.loads(str(z["scalars"]))
        arrays = {k: z[k] for k in z.files if k != "scalars"}
    return JKOPath(
        **arrays, iterations=scalars["iterations"], h=scalars["h"], seconds=0.0, meta=scalars["meta"]
    )


def jko_path(
    x0: ArrayLike,
    sde: VPSDE,
    h: float,
    keyframes: int | ArrayLike = 20,
    *,
    bandwidth: float | None = None,
    bandwidth_scale: float = 2.0,
    max_iter: int = 60,
    tol: float = 1e-3,
    check_coupling: bool = False,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> JKOPath:
    """The JKO (minimizing-movement) path of ``F = KL(. || N(0, I))`` on particles (method.md section 2).

    Each step solves ``mu_{k+1} = argmin_mu F(mu) + W2^2(mu, mu_k) / (2 h)`` over particle
    positions, with F's entropy replaced by the blob entropy (:func:`blob_free_energy`) and W2^2 by
    the identity-coupling cost (see :func:`jko_step`). By Theorem 1 the path approximates the exact
    marginals ``mu_t`` of the VP SDE: ``h`` is a step of the plain flow time ``s = int_0^t beta``, and
    each interval between keyframes is split into equal steps of at most h that land on the
    keyframe's flow time exactly, so each keyframe's VP time t is exact.

    Args:
        x0: data particles (n, d), n >= ``MIN_PARTICLES`` (the path's frame at t = 0).
        sde: the VP SDE (its schedule fixes the time change t -> s).
        h: JKO step bound in flow time s, > 0 (``int_0^T beta`` is about 5 for the default schedule).
        keyframes: ``K >= 2`` evenly spread VP times over ``[0, T]``, or increasing VP times in
            ``[0, T]`` (the path starts at x0 at t = 0 and is reported at these times).
        bandwidth: fixed blob bandwidth; default :func:`blob_bandwidth` of the particles at the start of
            each keyframe interval, times ``bandwidth_scale``.
        bandwidth_scale: factor of :func:`blob_bandwidth` (default 2: about 2.5 particle spacings,
            so the self-interaction of each blob weighs little; smaller values under-spread a Gaussian
            by a few percent and cost twice the iterations, larger ones blur narrow components at t = 0).
        max_iter: L-BFGS iterations per step.
        tol: gradient tolerance per particle.
        check_coupling: compare, with POT, the identity coupling to the optimal one on the first step
            of each interval (``coupling_gap``; costs one exact OT per keyframe).
        cache: serve repeated calls with the same inputs from memory (same inputs, same result), and
            from ``pretrained/flows/`` when these exact inputs were shipped precomputed
            (:func:`preset_jko_path`).
        cache_dir: also keep results on disk there (one small ``.npz`` per input hash).

    Returns:
        :class:`JKOPath`.

    Raises:
        ValueError: h <= 0, too few particles, keyframes outside ``[0, T]``, a non-VP SDE.
    """
    sde = _require_vp(sde)
    if not (isinstance(h, (int, float)) and math.isfinite(h) and h > 0):
        s_max = float(sde.int_beta(sde.T))
        raise ValueError(
            f"JKO step h must be a number in (0, {s_max:.4g}] (a step of s = int beta), got {h!r}"
        )
    x_np = _check_particles(x0, "x0 (the JKO needs a blob entropy)")
    if x_np.shape[0] > MAX_JKO_PARTICLES:
        raise ValueError(f"the JKO path takes at most {MAX_JKO_PARTICLES} particles, got {x_np.shape[0]}")
    ts = keyframe_times(keyframes, sde)
    if ts.size < 2:
        raise ValueError(f"the JKO path needs at least 2 keyframes, got {ts.size}")
    if bandwidth is not None and not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    payload = {
        "sde": sde.config(),
        "h": float(h),
        "ts": ts.tolist(),
        "bw": bandwidth,
        "bws": bandwidth_scale,
        "it": max_iter,
        "tol": tol,
        "cc": check_coupling,
        "v": 1,
    }
    key = _cache_key(x_np, payload)
    if cache and key in _MEMO:
        _MEMO.move_to_end(key)
        return copy.deepcopy(_MEMO[key])
    file = Path(cache_dir) / f"jko-{key}.npz" if cache_dir is not None else None
    shipped = PRECOMPUTED_DIR / f"jko-{key}.npz"  # read-only: precomputed for the presets
    if file is not None and file.exists():
        result = _load_path(file)
    elif cache and shipped.exists():
        result = _load_path(shipped)
    else:
        result = _run_jko(x_np, sde, float(h), ts, bandwidth, bandwidth_scale, max_iter, tol, check_coupling)
        result.meta["cache_key"] = key
        if file is not None:
            _save_path(result, file)
    if cache:
        _MEMO[key] = copy.deepcopy(result)
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return result


def _run_jko(
    x_np: np.ndarray,
    sde: VPSDE,
    h: float,
    ts: np.ndarray,
    bandwidth: float | None,
    bandwidth_scale: float,
    max_iter: int,
    tol: float,
    check_coupling: bool,
) -> JKOPath:
    start = time.perf_counter()
    s_key = flow_time(sde, ts)
    x = torch.as_tensor(x_np)
    n_int = len(ts) - 1
    frames = [x_np.astype(np.float32)] if s_key[0] <= 0 else []
    disp = np.zeros(n_int)
    gaps = np.full(n_int, np.nan)
    steps = np.zeros(n_int, dtype=np.int64)
    bws = np.zeros(n_int)
    iters = 0
    vel: torch.Tensor | None = None
    s_prev = 0.0
    # the first keyframe may be after t = 0: flow there first (not reported as an interval)
    segments = [(s_prev, float(s_key[0]), -1)] if s_key[0] > 0 else []
    segments += [(float(s_key[i]), float(s_key[i + 1]), i) for i in range(n_int)]
    for a, b, idx in segments:
        m, step = _substeps(a, b, h)
        eps = float(bandwidth) if bandwidth is not None else blob_bandwidth(x, bandwidth_scale)
        length = 0.0
        for j in range(m):
            # predictor: the previous step's velocity, extrapolated (the flow is smooth in s)
            guess = None if vel is None else x + step * vel
            y, it = jko_step(x, step, eps, y0=guess, max_iter=max_iter, tol=tol)
            vel = (y - x) / step
            iters += it
            cost = float(((y - x) ** 2).sum(1).mean())
            length += math.sqrt(cost)
            if check_coupling and j == 0 and idx >= 0:
                gaps[idx] = cost - exact_w2(x, y) ** 2
            x = y
        if idx >= 0:
            disp[idx], steps[idx], bws[idx] = length, m, eps
        frames.append(x.numpy().astype(np.float32))
    particles = np.stack(frames)
    fe = np.array([free_energy_particles(p) for p in particles])
    eps_fe = bws if bandwidth is None else np.full(n_int, float(bandwidth))
    # the blob functional of each frame, with the bandwidth of the interval it starts (last: ends)
    fe_blob = np.array(
        [blob_free_energy(p, float(eps_fe[min(i, n_int - 1)])) for i, p in enumerate(particles)]
    )
    return JKOPath(
        t=ts,
        s=s_key,
        particles=particles,
        free_energy=fe,
        free_energy_blob=fe_blob,
        displacement=disp,
        coupling_gap=gaps,
        n_steps=steps,
        bandwidth=bws,
        iterations=iters,
        h=h,
        seconds=time.perf_counter() - start,
        meta={"method": "blob JKO, identity coupling, L-BFGS", "n": int(x_np.shape[0])},
    )


def preset_x0(name: str, n: int = PRESET_FLOW["n"], seed: int = PRESET_FLOW["seed"]) -> torch.Tensor:
    """The data particles of a preset density that :func:`preset_jko_path` starts from: (n, 2) float32."""
    from geoflow.densities import get_density

    return get_density(name).sample(int(n), torch.Generator().manual_seed(int(seed)))


def preset_jko_path(
    name: str,
    sde: VPSDE | None = None,
    *,
    n: int = PRESET_FLOW["n"],
    keyframes: int = PRESET_FLOW["keyframes"],
    h: float = PRESET_FLOW["h"],
    seed: int = PRESET_FLOW["seed"],
    cache_dir: str | Path | None = None,
) -> JKOPath:
    """The JKO path of a preset density from :func:`preset_x0` (instant for the shipped defaults).

    With the default VP SDE and the defaults of ``PRESET_FLOW``, the mixture presets are shipped in
    ``pretrained/flows/`` (written by :func:`write_preset_flows`); any other input is computed
    (about 3-10 s for 1000 particles on a laptop CPU) and cached in memory.
    """
    return jko_path(preset_x0(name, n, seed), sde or VPSDE(), h, keyframes, cache_dir=cache_dir)


def write_preset_flows(names: Sequence[str] | None = None) -> list[Path]:
    """Compute and ship the preset JKO paths to ``pretrained/flows/`` (float32 particles, small .npz)."""
    from geoflow.densities import PRESETS, get_density

    names = (
        list(names)
        if names is not None
        else [k for k in PRESETS if isinstance(get_density(k), GaussianMixture)]
    )
    written = []
    for name in names:
        # cache=False: compute (or reuse the file already shipped), never serve from memory unsaved
        path = jko_path(
            preset_x0(name),
            VPSDE(),
            PRESET_FLOW["h"],
            PRESET_FLOW["keyframes"],
            cache=False,
            cache_dir=PRECOMPUTED_DIR,
        )
        written.append(PRECOMPUTED_DIR / f"jko-{path.meta['cache_key']}.npz")
    # a human-readable index: which file holds which preset, and the inputs it was computed from
    index = {"inputs": {**PRESET_FLOW, "sde": VPSDE().config(), "x0": "preset_x0(name)"}}
    index["files"] = {name: f.name for name, f in zip(names, written, strict=True)}
    (PRECOMPUTED_DIR / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return written


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
            beta = _beta(sde, t)
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


# =========================================================================== W2 along paths
def w2_along(particles_by_t: ArrayLike, exact_by_t: ArrayLike, num_itermax: int | None = None) -> np.ndarray:
    """Exact W2 (POT ``emd2``) between two paths frame by frame: ``W2(P[k], Q[k])``, shape (K,).

    Use it for a sampler's particles against exact samples of mu_t at the same times (for
    example :func:`exact_marginal_samples`), and print the floor: the same distance between two
    exact samples. Raises RuntimeError if POT hits its iteration limit (never silently inexact).
    """
    p, q = _check_path(particles_by_t, "particles_by_t"), _check_path(exact_by_t, "exact_by_t")
    if p.shape[0] != q.shape[0]:
        raise ValueError(f"paths need the same number of frames, got {p.shape[0]} and {q.shape[0]}")
    return np.array([exact_w2(a, b, num_itermax) for a, b in zip(p, q, strict=True)])


def w2_steps(particles: ArrayLike, num_itermax: int | None = None) -> np.ndarray:
    """Per-step W2 displacement ("speed" times the step) ``W2(P[k], P[k+1])``: (K, n, d) -> (K - 1,)."""
    p = _check_path(particles, "particles")
    return np.array([exact_w2(a, b, num_itermax) for a, b in zip(p[:-1], p[1:], strict=True)])


def path_length(particles: ArrayLike, *, coupling: str = "ot") -> float:
    """Length of a discrete path of measures: ``sum_k W2(P[k], P[k+1])``.

    ``coupling="ot"`` uses the exact W2 (a lower bound of the true curve's length that tightens as
    keyframes get denser); ``"identity"`` uses the particles' own pairing,
    ``sqrt(mean |P[k+1]_i - P[k]_i|^2)`` (an upper bound of each W2 term).
    """
    if coupling == "ot":
        return float(w2_steps(particles).sum())
    if coupling == "identity":
        p = _check_path(particles, "particles")
        return float(np.sqrt(((p[1:] - p[:-1]) ** 2).sum(-1).mean(-1)).sum())
    raise ValueError(f"unknown coupling {coupling!r}; valid: ot, identity")


def mccann_geodesic(
    x: ArrayLike, y: ArrayLike, ks: int | ArrayLike = 20, num_itermax: int | None = None
) -> tuple[np.ndarray, float]:
    """The W2 geodesic between two equal-size particle sets (McCann's displacement interpolation).

    With POT's optimal coupling (``ot.emd``: a permutation sigma for uniform equal-size sets),
    ``z_k = (1 - k) x_i + k y_sigma(i)``. It has constant speed, ``W2(z_a, z_b) = |a - b| W2(x, y)``,
    so its length is ``W2(x, y)``: the shortest path of measures, to compare with the gradient-flow
    path's length (:func:`path_length`).

    Args:
        x: (n, d) start (e.g. data).
        y: (n, d) end (e.g. prior samples).
        ks: number of frames ``K >= 2`` (evenly spaced in [0, 1]) or fractions in [0, 1].
        num_itermax: POT's network-simplex iteration limit (default ``max(10^6, 100 n^2)``); reaching
            it raises RuntimeError instead of returning an inexact coupling.

    Returns:
        ``(path, length)``: float32 (K, n, d) with particle i following its own straight line, and W2(x, y).
    """
    xa, ya = _check_particles(x, "x", 1), _check_particles(y, "y", 1)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same shape, got {xa.shape} and {ya.shape}")
    if isinstance(ks, (int, np.integer)):
        if ks < 2:
            raise ValueError(f"ks must be >= 2 frames or fractions in [0, 1], got {ks}")
        fr = np.linspace(0.0, 1.0, int(ks))
    else:
        fr = _np(ks).reshape(-1)
        if np.any(fr < 0) or np.any(fr > 1):
            raise ValueError(f"interpolation fractions must lie in [0, 1], got {fr.tolist()}")
    n = xa.shape[0]
    cost = ot.dist(xa, ya, metric="sqeuclidean")
    u = np.full(n, 1.0 / n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the log's "warning" entry is checked below and raised
        plan, log = ot.emd(u, u, cost, numItermax=num_itermax or max(1_000_000, 100 * n * n), log=True)
    if log.get("warning"):
        raise RuntimeError(f"POT emd did not converge ({log['warning']})")
    perm = np.argmax(plan, axis=1)  # uniform equal-size OT is a permutation (a vertex of the polytope)
    yp = ya[perm]
    path = np.stack([(1 - f) * xa + f * yp for f in fr]).astype(np.float32)
    return path, float(math.sqrt(max(log["cost"], 0.0)))


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
    smooth). The discrete :func:`path_length` of any path through the same marginals approaches it
    from below; compare with :func:`mccann_geodesic`'s length W2(mu_t0, mu_t1).
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
        x = float(sde.alpha(t)) * x0 + float(sde.sigma(t)) * z
        v = mixture.score(x, float(t), sde).to(torch.float64) + x
        speed[i] = float(v.pow(2).sum(1).mean().sqrt())
    return float(np.trapezoid(speed, s_grid))


# =========================================================================== theorem check
def theorem_check(
    mixture: GaussianMixture,
    sde: VPSDE,
    *,
    n: int = 1000,
    keyframes: int | ArrayLike = 6,
    h: float = 0.05,
    dt: float = 2e-3,
    generator: torch.Generator | None = None,
) -> list[dict[str, float]]:
    """A numerical check of Theorems 1 and 2 on a mixture, as a table (one row per keyframe).

    Columns (all exact W2 by POT against fresh exact samples of ``mu_t``):

    * ``w2_forward_em``: forward Euler-Maruyama particles (the forward splitting path) -- the SDE;
    * ``w2_jko``: the blob JKO path -- the gradient flow of KL (Theorem 1 says these agree);
    * ``w2_reverse``: the reverse splitting path with the exact score, started from N(0, I) at T
      (Theorem 2: it retraces the same marginals backwards);
    * ``w2_floor``: two independent exact samples of the same n (the finite-sample floor);
    * ``*_given_x0``: the forward EM and JKO particles against the exact noising of the *same* data
      particles x0 (``a(t) x0 + s(t) z``), with its own floor; this removes the mode-weight noise of two
      independent data samples, which dominates the unconditional W2 at n ~ 1000;
    * ``free_energy_exact`` and ``free_energy_jko``.

    Agreement means each column is near its floor, down to it as h and dt shrink.
    """
    mixture = require_mixture(mixture, "the theorem check")
    sde = _require_vp(sde)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    ts = keyframe_times(keyframes, sde)
    x0 = mixture.sample(n, g).to(torch.float64)
    fwd = splitting_path(x0, sde, ts, direction="forward", dt=dt, generator=g).particles
    jko = jko_path(x0, sde, h, ts, cache=False).particles
    prior = sde.prior_sample((n, mixture.dim), g, dtype=torch.float64)
    rev = splitting_path(prior, sde, ts, direction="reverse", score_fn=mixture, dt=dt, generator=g)
    rev_p = rev.particles[::-1]  # back to increasing t
    ex1 = exact_marginal_samples(mixture, sde, ts, n, g)
    ex2 = exact_marginal_samples(mixture, sde, ts, n, g)
    # conditional on the data sample x0: removes the mode-weight noise of two independent data samples
    ex_a = exact_marginal_samples(mixture, sde, ts, n, g, x0=x0)
    ex_b = exact_marginal_samples(mixture, sde, ts, n, g, x0=x0)
    fe = free_energy_exact(mixture, ts, sde)
    rows = []
    for k, t in enumerate(ts):
        rows.append(
            {
                "t": float(t),
                "w2_forward_em": exact_w2(fwd[k], ex1[k]),
                "w2_jko": exact_w2(jko[k], ex1[k]),
                "w2_reverse": exact_w2(rev_p[k], ex1[k]),
                "w2_floor": exact_w2(ex2[k], ex1[k]),
                "w2_forward_em_given_x0": exact_w2(fwd[k], ex_a[k]),
                "w2_jko_given_x0": exact_w2(jko[k], ex_a[k]),
                "w2_floor_given_x0": exact_w2(ex_b[k], ex_a[k]),
                "free_energy_exact": float(fe[k]),
                "free_energy_jko": free_energy_particles(jko[k]),
            }
        )
    return rows
