"""Gaussian closed forms (as POT's ``ot/gaussian.py``): the oracles of the gradient-flow checks.

* :func:`gaussian_kl`: ``KL(N(m1, C1) || N(m2, C2))``; :func:`free_energy_gaussian`: its value
  against the prior ``N(0, I)``, the free energy ``F`` of method.md section 2.
* :func:`bures_w2`: the W2 distance between Gaussians (Bures metric).
* :func:`ou_gaussian`: the mean and covariance at time t of the SDE started at a Gaussian.
* :func:`jko_step_gaussian`: the exact JKO step of ``F = KL(. || N(0, I))`` from a Gaussian.

Inputs are arrays or tensors; outputs float64 numpy arrays or floats.
"""

from __future__ import annotations

import math

import numpy as np

from geoflow.metrics import ArrayLike, _np
from geoflow.sde import SDE


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


def free_energy_gaussian(mean: ArrayLike, cov: ArrayLike) -> float:
    """``KL(N(m, C) || N(0, I)) = (tr C + |m|^2 - d - log det C) / 2`` (closed form)."""
    m = _np(mean)
    return gaussian_kl(m, cov, np.zeros_like(m), np.eye(m.size))
