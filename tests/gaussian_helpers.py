"""Shared Gaussian fixtures of the Gaussian, JKO and WGF tests: a rotated start N(M0, C0) and moment fits."""

from __future__ import annotations

import math

import numpy as np

from geoflow.densities import GaussianMixture


def rot(a: float) -> np.ndarray:
    """The 2-D rotation matrix by angle ``a``."""
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def gauss(mean, cov) -> GaussianMixture:
    """The single Gaussian N(mean, cov) as a one-component mixture."""
    return GaussianMixture([1.0], [mean], [cov], name="gauss")


M0 = np.array([1.0, -0.5])
C0 = rot(0.5) @ np.diag([0.2, 2.0]) @ rot(0.5).T


def fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sample mean and covariance of ``x`` (n, d), in float64."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(0), np.cov(x.T)
