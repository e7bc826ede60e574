"""Forward SDEs in the paper's notation (method.md section 1), rank-agnostic.

Every SDE exposes the same small interface that the samplers use, and nothing else:

* ``drift(x, t)`` and ``diffusion(t)`` of ``dx = f(x, t) dt + g(t) dW``;
* ``alpha(t)`` and ``sigma(t)`` of the marginal ``x_t = alpha(t) x_0 + sigma(t) z``;
* ``prior_sample(shape, generator)`` and ``time_grid(n, spacing)``.

Times are floats or tensors of shape ``(B,)``; results broadcast against ``x`` of shape
``(B, *D)`` through :func:`append_dims`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch

TimeLike = float | torch.Tensor
SPACINGS = ("uniform", "quadratic", "logsnr")
Spacing = Literal["uniform", "quadratic", "logsnr"]


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims so a per-sample tensor ``(B,)`` broadcasts to ``ndim``."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a {v.ndim}-d tensor to {ndim} dims")
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


def _as_tensor(t: TimeLike) -> torch.Tensor:
    return t if isinstance(t, torch.Tensor) else torch.tensor(float(t), dtype=torch.float64)


def _check_spacing(spacing: str) -> None:
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")


def _check_steps(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"number of steps must be an integer >= 1, got {n!r}")


class _SDEBase:
    """Shared grid and prior code; subclasses define alpha, sigma, drift and diffusion."""

    T: float
    t_min: float
    name: str

    def alpha(self, t: TimeLike) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def sigma(self, t: TimeLike) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def prior_std(self) -> float:
        """Standard deviation of the prior ``N(0, prior_std^2 I)``."""
        raise NotImplementedError  # pragma: no cover

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Draw ``x_T ~ N(0, prior_std^2 I)`` of the given shape ``(B, *D)``."""
        z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return z * self.prior_std()

    def log_snr(self, t: TimeLike) -> torch.Tensor:
        """``lambda(t) = log(alpha(t) / sigma(t))``, decreasing in t."""
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def time_grid(self, n: int, spacing: Spacing = "uniform") -> torch.Tensor:
        """Reverse-time grid of ``n`` steps: ``n + 1`` times from ``T`` down to ``t_min``.

        Args:
            n: number of steps N >= 1.
            spacing: ``"uniform"`` in t, ``"quadratic"`` (denser near t_min, DDIM's choice),
                or ``"logsnr"`` (uniform in log(alpha/sigma), DPM-Solver's choice).

        Returns:
            float64 tensor of shape ``(n + 1,)``, strictly decreasing.
        """
        _check_steps(n)
        _check_spacing(spacing)
        u = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
        if spacing == "uniform":
            return self.T + (self.t_min - self.T) * u
        if spacing == "quadratic":
            return self.t_min + (self.T - self.t_min) * (1.0 - u) ** 2
        lam0, lam1 = float(self.log_snr(self.T)), float(self.log_snr(self.t_min))
        return self.t_from_log_snr(lam0 + (lam1 - lam0) * u)

    def t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        """Invert ``log_snr`` by bisection (monotone), shape preserved, float64."""
        lo = torch.full_like(lam, self.t_min, dtype=torch.float64)
        hi = torch.full_like(lam, self.T, dtype=torch.float64)
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            too_early = self.log_snr(mid) > lam  # log-SNR still too high: move later
            lo = torch.where(too_early, mid, lo)
            hi = torch.where(too_early, hi, mid)
        out = 0.5 * (lo + hi)
        out[0], out[-1] = max(float(out[0]), self.t_min), float(out[-1])
        return out

    def marginal_sample(
        self,
        x0: torch.Tensor,
        t: TimeLike,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The exact marginal ``x_t = alpha(t) x_0 + sigma(t) z`` for ``x0`` of shape ``(B, *D)``.

        ``t``: a float or per-sample times (B,). ``noise``: the ``z`` to use (shape of x0); drawn
        from ``generator`` when not given. The one place this formula is written.
        """
        z = noise
        if z is None:
            z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        a = append_dims(torch.as_tensor(self.alpha(t)).to(dtype=x0.dtype, device=x0.device), x0.ndim)
        s = append_dims(torch.as_tensor(self.sigma(t)).to(dtype=x0.dtype, device=x0.device), x0.ndim)
        return a * x0 + s * z

    def config(self) -> dict:
        """JSON-serialisable description, rebuilt by :func:`sde_from_config`."""
        return {"type": self.name, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class VPSDE(_SDEBase):
    """VP SDE of method.md eq. (1): ``dx = -beta(t) x dt + sqrt(2 beta(t)) dW``.

    ``beta(t) = beta_min + (beta_max - beta_min) t`` (the paper's beta, half of Song et al.'s),
    ``alpha(t) = exp(-int_0^t beta)``, ``sigma(t)^2 = 1 - alpha(t)^2``, prior ``N(0, I)``.
    """

    beta_min: float = 0.05
    beta_max: float = 10.0
    T: float = 1.0
    t_min: float = 1e-3
    name = "vp"

    def __post_init__(self) -> None:
        if not (0 <= self.beta_min <= self.beta_max) or self.beta_max <= 0:
            raise ValueError(
                f"need 0 <= beta_min <= beta_max and beta_max > 0, got {self.beta_min}, {self.beta_max}"
            )
        if not (0 < self.t_min < self.T):
            raise ValueError(f"need 0 < t_min < T, got t_min={self.t_min}, T={self.T}")

    def beta(self, t: TimeLike) -> torch.Tensor:
        """``beta(t)`` (linear schedule)."""
        return self.beta_min + (self.beta_max - self.beta_min) * _as_tensor(t)

    def int_beta(self, t: TimeLike) -> torch.Tensor:
        """``int_0^t beta(s) ds``."""
        t = _as_tensor(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t: TimeLike) -> torch.Tensor:
        return torch.exp(-self.int_beta(t))

    def sigma(self, t: TimeLike) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(-2.0 * self.int_beta(t)))

    def drift(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """``f(x, t) = -beta(t) x``; x of shape ``(B, *D)``."""
        return -append_dims(self.beta(t).to(x.dtype), x.ndim) * x

    def diffusion(self, t: TimeLike) -> torch.Tensor:
        """``g(t) = sqrt(2 beta(t))``."""
        return torch.sqrt(2.0 * self.beta(t))

    def prior_std(self) -> float:
        return 1.0

    def prior_mismatch(self) -> float:
        """``alpha(T)``: how much of the data mean survives at T (0 means x_T ~ N(0, I) exactly)."""
        return float(self.alpha(self.T))


@dataclass(frozen=True)
class VESDE(_SDEBase):
    """VE SDE (NCSN): ``dx = sqrt(d sigma^2 / dt) dW``, geometric ``sigma(t) = smin (smax/smin)^t``.

    ``alpha(t) = 1``; the marginal is ``x_0 + sigma(t) z`` (the ``sigma_min`` offset at t = 0 is
    ignored, as in NCSN); prior ``N(0, sigma_max^2 I)``.
    """

    sigma_min: float = 0.01
    sigma_max: float = 10.0
    T: float = 1.0
    t_min: float = 1e-3
    name = "ve"

    def __post_init__(self) -> None:
        if not (0 < self.sigma_min < self.sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if not (0 < self.t_min < self.T):
            raise ValueError(f"need 0 < t_min < T, got t_min={self.t_min}, T={self.T}")

    def alpha(self, t: TimeLike) -> torch.Tensor:
        return torch.ones_like(_as_tensor(t))

    def sigma(self, t: TimeLike) -> torch.Tensor:
        t = _as_tensor(t)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** (t / self.T)

    def drift(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: TimeLike) -> torch.Tensor:
        """``g(t) = sigma(t) sqrt(2 log(smax / smin) / T)``."""
        return self.sigma(t) * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min) / self.T)

    def prior_std(self) -> float:
        return self.sigma_max


SDE = VPSDE | VESDE
SDE_NAMES = ("vp", "ve")


def paper_beta(sde: SDE, t: TimeLike) -> torch.Tensor:
    """The paper's ``beta(t) = g(t)^2 / 2`` (method.md eq. 1; for the VP SDE, its linear beta).

    Every step of method.md section 3 is written in this beta, so the samplers, the projection
    loss and the velocity fields all read it from here. t: a float or per-sample times (B,);
    the result has t's shape (float64 for a float t).
    """
    return 0.5 * sde.diffusion(_as_tensor(t)) ** 2


def probability_flow_velocity(sde: SDE, x: torch.Tensor, t: TimeLike, score: torch.Tensor) -> torch.Tensor:
    """Probability-flow velocity ``dx/dt = f(x, t) - g(t)^2 s / 2`` in forward time, shape of x.

    For the VP SDE this is Theorem 1's particle velocity ``-beta (grad log mu_t + x)``; generation
    moves along its negative in reverse time (Theorem 2 without the noise split).

    Args:
        x: positions (B, *D).
        t: a forward time (float) or per-sample times (B,).
        score: ``grad log p_t(x)``, shape of x.
    """
    b = append_dims(paper_beta(sde, t).to(dtype=x.dtype, device=x.device), x.ndim)
    return sde.drift(x, t) - b * score


def make_sde(name: str, **kwargs: float) -> SDE:
    """Build an SDE by name (``"vp"`` or ``"ve"``) with its default schedule unless overridden."""
    if name == "vp":
        return VPSDE(**kwargs)
    if name == "ve":
        return VESDE(**kwargs)
    raise ValueError(f"unknown SDE {name!r}; valid: {', '.join(SDE_NAMES)}")


def sde_from_config(cfg: dict) -> SDE:
    """Inverse of ``sde.config()``."""
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    cfg.pop("name", None)
    if kind is None:
        raise ValueError("SDE config lacks its 'type'")
    return make_sde(kind, **cfg)
