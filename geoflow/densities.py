"""Named 2-D toy densities; Gaussian mixtures with exact log-density and score at every t.

A density has ``name``, ``dim`` and ``sample(n, generator=) -> (n, d)``. Gaussian mixtures add
``log_prob(x, t, sde)`` and ``score(x, t, sde)`` of their marginal under a forward SDE
(method.md section 1): the marginal of ``sum_k w_k N(m_k, C_k)`` at time t is
``sum_k w_k N(alpha m_k, alpha^2 C_k + sigma^2 I)``.

A user's own data enters as a point cloud (CSV or array; a Gaussian kernel density, itself a
mixture, so it has an exact score too) or as a JSON mixture spec.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoflow.score import ScoreFn
from geoflow.sde import SDE, TimeLike
from geoflow.validate import LIMITS, InputError, decode_text, load_json, read_text_file

# limits: defined once in geoflow.validate.LIMITS
MIN_POINTS = LIMITS.min_points
MAX_POINTS = LIMITS.max_points  # components of a point-cloud kernel density; larger inputs are subsampled
MAX_COMPONENTS = LIMITS.components
MAX_COORDINATE = LIMITS.coordinate  # largest |coordinate| of points and means


class Density:
    """Base class: a 2-D distribution that can be sampled."""

    name: str = "density"
    dim: int = 2
    has_exact_score: bool = False

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` samples, float32 of shape ``(n, 2)``."""
        raise NotImplementedError  # pragma: no cover

    def bounds(self) -> tuple[float, float]:
        """A square plotting window ``(lo, hi)`` that holds the data and the prior."""
        return (-4.5, 4.5)


def _randn(shape: tuple[int, ...], g: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _rand(shape: tuple[int, ...], g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=g, dtype=torch.float64)


class GaussianMixture(Density):
    """``rho = sum_k w_k N(m_k, C_k)`` in d dims with exact marginals under any SDE.

    Args:
        weights: (K,) positive, summing to 1.
        means: (K, d).
        covs: (K, d, d) symmetric positive definite.
        name: display name.
    """

    has_exact_score = True

    def __init__(
        self,
        weights: Any,
        means: Any,
        covs: Any,
        name: str = "mixture",
    ) -> None:
        w = _as_float_array(weights, "weights")
        m = _as_float_array(means, "means")
        c = _as_float_array(covs, "covs")
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"weights must be a non-empty list of numbers, got shape {w.shape}")
        k = w.size
        if k > MAX_COMPONENTS:
            raise ValueError(f"at most {MAX_COMPONENTS} components, got {k}")
        if m.ndim != 2 or m.shape[0] != k:
            raise ValueError(f"means must be a list of {k} points (one per weight), got shape {m.shape}")
        d = m.shape[1]
        if c.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}) to match means, got {c.shape}")
        if np.any(w <= 0):
            raise ValueError("weights must all be positive")
        if abs(w.sum() - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1, they sum to {w.sum():.6g}")
        if np.abs(m).max() > MAX_COORDINATE:
            raise ValueError(f"means must lie within +-{MAX_COORDINATE:g}, got {np.abs(m).max():.3g}")
        if np.abs(c).max() > MAX_COORDINATE**2:
            raise ValueError(f"covariance entries must be at most {MAX_COORDINATE**2:g} in size")
        if not np.allclose(c, np.swapaxes(c, 1, 2), atol=1e-9):
            raise ValueError("every covariance must be symmetric")
        eig = np.linalg.eigvalsh(c)
        if np.any(eig <= 1e-12):
            bad = int(np.argmax(np.any(eig <= 1e-12, axis=1)))
            raise ValueError(f"covariance {bad} is not positive definite (eigenvalues {eig[bad].tolist()})")
        self.name = name
        self.dim = d
        self.weights = torch.tensor(w / w.sum(), dtype=torch.float64)
        self.means = torch.tensor(m, dtype=torch.float64)
        self.covs = torch.tensor(c, dtype=torch.float64)
        try:
            self._chol = torch.linalg.cholesky(self.covs)
        except RuntimeError:  # torch's LinAlgError: positive definite in numpy, not numerically here
            raise ValueError("a covariance is too close to singular (Cholesky failed)") from None

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_n(n)
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = _randn((n, self.dim), generator)
        x = self.means[idx] + torch.einsum("nij,nj->ni", self._chol[idx], z)
        return x.float()

    def bounds(self) -> tuple[float, float]:
        sd = torch.sqrt(torch.diagonal(self.covs, dim1=1, dim2=2)).max().item()
        r = max(self.means.abs().max().item() + 3 * sd, 3.5)
        return (-1.1 * r, 1.1 * r)

    # ----------------------------------------------------------------- marginals
    def marginal_params(
        self, t: TimeLike | None = None, sde: SDE | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Means ``alpha m_k`` (K, d) and covariances ``alpha^2 C_k + sigma^2 I`` (K, d, d) at t."""
        if t is None or sde is None:
            return self.means, self.covs
        a, s = float(sde.alpha(t)), float(sde.sigma(t))
        eye = torch.eye(self.dim, dtype=torch.float64)
        return a * self.means, a * a * self.covs + s * s * eye

    def marginal(self, t: TimeLike, sde: SDE) -> GaussianMixture:
        """The exact marginal at time t as a new mixture."""
        m, c = self.marginal_params(t, sde)
        return GaussianMixture(self.weights.numpy(), m.numpy(), c.numpy(), name=f"{self.name}@t")

    def _per_sample_params(
        self, x: torch.Tensor, t: TimeLike | None, sde: SDE | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Means/covs broadcastable to (B, K, d) / (B, K, d, d), sharing work when t is constant."""
        if t is None or sde is None:
            return self.means[None], self.covs[None]
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        if tt.numel() == 1 or bool(torch.all(tt == tt[0])):
            m, c = self.marginal_params(float(tt[0]), sde)
            return m[None], c[None]
        if tt.numel() != x.shape[0]:
            raise ValueError(f"t must be a scalar or of shape ({x.shape[0]},), got {tuple(tt.shape)}")
        a = sde.alpha(tt).to(torch.float64)[:, None]
        s = sde.sigma(tt).to(torch.float64)[:, None]
        eye = torch.eye(self.dim, dtype=torch.float64)
        m = a[..., None] * self.means[None]
        c = (a * a)[..., None, None] * self.covs[None] + (s * s)[..., None, None] * eye
        return m, c

    def _log_comp_and_grad(
        self, x: torch.Tensor, t: TimeLike | None, sde: SDE | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-component ``log w_k + log N(x; m_k, C_k)`` (B, K) and ``-C_k^{-1}(x - m_k)`` (B, K, d)."""
        x64 = x.to(torch.float64).reshape(-1, self.dim)
        m, c = self._per_sample_params(x64, t, sde)
        chol = torch.linalg.cholesky(c)
        diff = x64[:, None, :] - m  # (B, K, d)
        # C^{-1} (x - m): one small inverse per component, then a contraction; a batched solve per
        # sample is several times slower, and the exact score is the inner loop of every benchmark
        prec = torch.cholesky_inverse(chol)
        if prec.shape[0] == 1:
            sol = torch.einsum("kij,bkj->bki", prec[0], diff)
        else:
            sol = torch.einsum("bkij,bkj->bki", prec, diff)
        maha = (diff * sol).sum(-1)
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logn = -0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
        return torch.log(self.weights)[None] + logn, -sol

    def log_prob(self, x: torch.Tensor, t: TimeLike | None = None, sde: SDE | None = None) -> torch.Tensor:
        """Exact ``log p_t(x)`` for x of shape (B, d); t a scalar or (B,); t=None means the data."""
        logc, _ = self._log_comp_and_grad(x, t, sde)
        return torch.logsumexp(logc, dim=1).to(x.dtype)

    def score(self, x: torch.Tensor, t: TimeLike | None = None, sde: SDE | None = None) -> torch.Tensor:
        """Exact ``grad_x log p_t(x) = sum_k r_k(x) (-C_k^{-1} (x - m_k))``, shape (B, d)."""
        logc, grads = self._log_comp_and_grad(x, t, sde)
        r = torch.softmax(logc, dim=1)
        return (r[..., None] * grads).sum(1).to(x.dtype).reshape(x.shape)

    def score_fn(self, sde: SDE) -> ScoreFn:
        """A ``score(x, t)`` callable for the samplers (the exact, no-learning-error score)."""

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.score(x, t, sde)

        return fn

    def to_spec(self) -> dict:
        """The JSON spec this mixture is built from (see :func:`mixture_from_spec`)."""
        return {
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "covs": self.covs.tolist(),
        }


class PointCloud(GaussianMixture):
    """A user's point cloud as a Gaussian kernel density (equal weights, isotropic bandwidth).

    Being a mixture, it has an exact score at every t. Scott's rule bandwidth by default.

    Args:
        points: (n, 2) finite numbers, n >= 10; more than ``MAX_POINTS`` are subsampled
            (deterministically) and ``self.message`` says so.
        bandwidth: kernel standard deviation; default Scott's rule times 0.5.
    """

    def __init__(self, points: Any, bandwidth: float | None = None, name: str = "points") -> None:
        pts = validate_points(points)
        self.message = ""
        if pts.shape[0] > MAX_POINTS:
            rng = np.random.default_rng(0)
            keep = np.sort(rng.choice(pts.shape[0], MAX_POINTS, replace=False))
            self.message = (
                f"{pts.shape[0]} points given; using a fixed random subset of {MAX_POINTS} "
                f"(the cap for a point-cloud density)"
            )
            warnings.warn(self.message, stacklevel=2)
            pts = pts[keep]
        n = pts.shape[0]
        if bandwidth is None:
            bandwidth = 0.5 * float(np.mean(pts.std(axis=0))) * n ** (-1.0 / 6.0)
        if not (bandwidth > 0 and math.isfinite(bandwidth)):
            raise ValueError(f"bandwidth must be a positive number, got {bandwidth}")
        self.points = pts
        self.bandwidth = float(bandwidth)
        covs = np.broadcast_to(np.eye(2) * self.bandwidth**2, (n, 2, 2)).copy()
        super().__init__(np.full(n, 1.0 / n), pts, covs, name=name)


def _as_float_array(v: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{what} must contain only numbers of the same nesting ({e})") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr


def _check_n(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"sample count must be a positive integer, got {n!r}")


def validate_points(points: Any) -> np.ndarray:
    """Check a user point cloud: (n, 2) finite numbers with n >= 10. Returns float64 (n, 2)."""
    arr = _as_float_array(points, "points")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"points must have exactly 2 columns (x, y), got shape {arr.shape}")
    if arr.shape[0] < MIN_POINTS:
        raise ValueError(f"need at least {MIN_POINTS} points, got {arr.shape[0]}")
    if np.abs(arr).max() > MAX_COORDINATE:
        big = np.abs(arr).max()
        raise ValueError(f"points must lie within +-{MAX_COORDINATE:g}, got a coordinate of {big:.3g}")
    return arr


def read_points_csv(source: str | Path | bytes | io.IOBase) -> np.ndarray:
    """Read a CSV of two numeric columns (a header row is allowed) into an (n, 2) array.

    Raises:
        ValueError: with the line and the problem for wrong columns, text, NaN/inf, too few rows.
    """
    if isinstance(source, (str, Path)):
        text = read_text_file(source, "CSV file")  # a directory, too large or not UTF-8: named
    elif isinstance(source, bytes):
        text = _decode(source, "the CSV")
    else:
        raw = source.read()
        text = _decode(raw, "the CSV") if isinstance(raw, bytes) else str(raw)
    rows: list[tuple[float, float]] = []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("the CSV is empty")
    for i, line in enumerate(lines, start=1):
        cells = [c.strip() for c in line.replace(";", ",").replace("\t", ",").split(",")]
        if len(cells) != 2:
            raise ValueError(f"line {i}: expected 2 columns (x, y), found {len(cells)}")
        try:
            x, y = float(cells[0]), float(cells[1])
        except ValueError:
            if i == 1:
                continue  # a header row
            raise ValueError(f"line {i}: non-numeric value in {line.strip()!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"line {i}: NaN or infinite value in {line.strip()!r}")
        rows.append((x, y))
    return validate_points(np.array(rows, dtype=np.float64).reshape(-1, 2))


def _decode(raw: bytes, what: str) -> str:
    if len(raw) > LIMITS.text_bytes:
        raise InputError(f"{what} is larger than {LIMITS.text_bytes >> 20} MiB")
    return decode_text(raw, what)


def mixture_from_spec(spec: dict | str | Path, name: str = "custom mixture") -> GaussianMixture:
    """Build a mixture from ``{"weights": [...], "means": [[x, y], ...], "covs": [[[a, b], [b, c]], ...]}``.

    ``spec`` may be a dict, a JSON string, or a path to a JSON file.
    """
    what = "mixture spec"
    if isinstance(spec, Path) or (isinstance(spec, str) and not spec.lstrip().startswith("{")):
        path = Path(spec)
        what = f"mixture spec file {str(path)!r}"
        if not path.exists():
            raise ValueError(f"{what} does not exist")
        spec = read_text_file(path, "mixture spec file", LIMITS.spec_bytes)
        name = path.stem
    if isinstance(spec, str):
        spec = load_json(spec, what)  # bounded size and depth: no RecursionError
    if not isinstance(spec, dict):
        raise ValueError("mixture spec must be a JSON object with weights, means and covs")
    missing = [k for k in ("weights", "means", "covs") if k not in spec]
    if missing:
        raise ValueError(f"mixture spec lacks {', '.join(missing)} (needs weights, means, covs)")
    means = _as_float_array(spec["means"], "means")
    if means.ndim != 2 or means.shape[1] != 2:
        raise ValueError(f"means must be a list of [x, y] points, got shape {means.shape}")
    return GaussianMixture(spec["weights"], means, spec["covs"], name=name)


# --------------------------------------------------------------------------- presets
def _ring_mixture(k: int, radius: float, std: float, name: str) -> GaussianMixture:
    ang = 2 * np.pi * np.arange(k) / k
    means = radius * np.stack([np.cos(ang), np.sin(ang)], 1)
    covs = np.broadcast_to(np.eye(2) * std**2, (k, 2, 2))
    return GaussianMixture(np.full(k, 1.0 / k), means, covs, name=name)


def eight_gaussians() -> GaussianMixture:
    """8 isotropic Gaussians (std 0.2) evenly on a circle of radius 2."""
    return _ring_mixture(8, 2.0, 0.2, "eight_gaussians")


def grid25() -> GaussianMixture:
    """25 isotropic Gaussians (std 0.12) on the grid {-2,...,2}^2."""
    g = np.arange(-2, 3, dtype=np.float64)
    means = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    covs = np.broadcast_to(np.eye(2) * 0.12**2, (25, 2, 2))
    return GaussianMixture(np.full(25, 1 / 25), means, covs, name="grid25")


def asymmetric() -> GaussianMixture:
    """Two components, weights 0.75 / 0.25, anisotropic and differently oriented covariances."""
    return GaussianMixture(
        [0.75, 0.25],
        [[-1.0, -0.5], [1.5, 1.2]],
        [[[0.6, 0.35], [0.35, 0.3]], [[0.08, -0.04], [-0.04, 0.25]]],
        name="asymmetric",
    )


def three_component() -> GaussianMixture:
    """The 3-component anisotropic mixture of method.md section 4's reference numbers."""
    return GaussianMixture(
        [0.5, 0.3, 0.2],
        [[-1.5, 0.0], [1.0, 1.0], [1.0, -1.5]],
        [[[0.3, 0.2], [0.2, 0.4]], [[0.2, -0.1], [-0.1, 0.15]], [[0.05, 0.0], [0.0, 0.3]]],
        name="three_component",
    )


class SampledDensity(Density):
    """A density known only through a sampler ``f(n, generator) -> (n, 2)`` float64 tensor."""

    def __init__(
        self,
        name: str,
        sampler: Callable[[int, torch.Generator | None], torch.Tensor],
        doc: str,
    ) -> None:
        self.name = name
        self._sampler = sampler
        self.__doc__ = doc

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_n(n)
        return self._sampler(n, generator).float()


def _two_moons(n: int, g: torch.Generator | None) -> torch.Tensor:
    upper = _rand((n,), g) < 0.5
    th = math.pi * _rand((n,), g)
    x = torch.where(upper, torch.cos(th), 1 - torch.cos(th))
    y = torch.where(upper, torch.sin(th), 0.5 - torch.sin(th))
    pts = torch.stack([x - 0.5, y - 0.25], 1) * 1.6
    return pts + 0.08 * _randn((n, 2), g)


def _circles(n: int, g: torch.Generator | None) -> torch.Tensor:
    outer = _rand((n,), g) < 0.5
    r = torch.where(outer, torch.tensor(2.5, dtype=torch.float64), torch.tensor(1.2, dtype=torch.float64))
    th = 2 * math.pi * _rand((n,), g)
    pts = torch.stack([r * torch.cos(th), r * torch.sin(th)], 1)
    return pts + 0.08 * _randn((n, 2), g)


def _swiss_roll(n: int, g: torch.Generator | None) -> torch.Tensor:
    th = 1.5 * math.pi * (1 + 2 * _rand((n,), g))
    pts = torch.stack([th * torch.cos(th), th * torch.sin(th)], 1) / 5.0
    return pts + 0.08 * _randn((n, 2), g)


def _checkerboard(n: int, g: torch.Generator | None) -> torch.Tensor:
    # 8 filled unit squares of a 4x4 board on [-2, 2]^2
    x = 4 * _rand((n,), g) - 2
    col = torch.floor(x).long() + 2
    row_choice = (_rand((n,), g) < 0.5).long()
    row = 2 * row_choice + (col % 2)  # rows {0, 2} or {1, 3} depending on column parity
    y = row.to(torch.float64) - 2 + _rand((n,), g)
    return torch.stack([x, y], 1)


def _pinwheel(n: int, g: torch.Generator | None) -> torch.Tensor:
    k, rate = 5, 0.25
    rads = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    lab = torch.randint(0, k, (n,), generator=g)
    feats = _randn((n, 2), g) * torch.tensor([0.3, 0.05], dtype=torch.float64)
    feats[:, 0] += 1.0
    ang = rads[lab] + rate * torch.exp(feats[:, 0])
    rot = torch.stack([torch.cos(ang), -torch.sin(ang), torch.sin(ang), torch.cos(ang)], 1)
    rot = rot.reshape(n, 2, 2)
    return 1.6 * torch.einsum("ni,nij->nj", feats, rot)


def _two_spirals(n: int, g: torch.Generator | None) -> torch.Tensor:
    r = torch.sqrt(_rand((n,), g)) * 3 * math.pi
    sign = torch.where(_rand((n,), g) < 0.5, -1.0, 1.0).to(torch.float64)
    pts = torch.stack([-torch.cos(r) * r, torch.sin(r) * r], 1) * sign[:, None]
    return pts / 3.0 + 0.1 * _randn((n, 2), g)


PRESETS: dict[str, Callable[[], Density]] = {
    "eight_gaussians": eight_gaussians,
    "grid25": grid25,
    "asymmetric": asymmetric,
    "three_component": three_component,
    "two_moons": lambda: SampledDensity("two_moons", _two_moons, "Two interleaved half circles."),
    "circles": lambda: SampledDensity("circles", _circles, "Two concentric rings (radii 1.2, 2.5)."),
    "swiss_roll": lambda: SampledDensity("swiss_roll", _swiss_roll, "A 2-D swiss roll spiral."),
    "checkerboard": lambda: SampledDensity(
        "checkerboard", _checkerboard, "Uniform on 8 squares of a 4x4 board."
    ),
    "pinwheel": lambda: SampledDensity("pinwheel", _pinwheel, "Five curved arms."),
    "two_spirals": lambda: SampledDensity("two_spirals", _two_spirals, "Two interleaved spirals."),
}
DENSITY_NAMES = tuple(PRESETS)


def get_density(name: str) -> Density:
    """A named preset density; ``ValueError`` listing the valid names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown density {name!r}; valid: {', '.join(DENSITY_NAMES)}")
    return PRESETS[name]()


def load_density(spec: str | Path) -> Density:
    """A preset name, a ``.json`` mixture spec, or a ``.csv`` point cloud, as the CLI accepts."""
    s = str(spec)
    if s in PRESETS:
        return get_density(s)
    low = s.lower()
    if low.endswith(".json"):
        return mixture_from_spec(Path(s))
    if low.endswith(".csv"):
        if not Path(s).exists():
            raise ValueError(f"CSV file {s!r} does not exist")
        return PointCloud(read_points_csv(Path(s)), name=Path(s).stem)
    raise ValueError(
        f"unknown density {s!r}; valid: {', '.join(DENSITY_NAMES)}, a .json mixture spec, or a .csv of points"
    )
