"""ScoreModel: the one place that converts between eps, x0 and score parametrizations.

The network predicts the noise ``eps`` of ``x_t = alpha x_0 + sigma eps`` from the scaled input
``c_in x_t`` with ``c_in = 1 / sqrt(alpha^2 s_data^2 + sigma^2)`` (unit-variance input at every t).
Then ``score = -eps / sigma`` and Tweedie's ``x0_hat = (x + sigma^2 score) / alpha``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from geoflow.nets import build_net, net_config
from geoflow.sde import SDE, append_dims, sde_from_config

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def batch_time(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A time as a per-sample tensor of shape (B,) on x's device, float64."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


def tweedie_x0(x: torch.Tensor, score: torch.Tensor, t: torch.Tensor, sde: SDE) -> torch.Tensor:
    """Tweedie's denoiser ``E[x_0 | x_t] = (x + sigma(t)^2 score) / alpha(t)``; t of shape (B,)."""
    a = append_dims(sde.alpha(t).to(x.dtype), x.ndim)
    s = append_dims(sde.sigma(t).to(x.dtype), x.ndim)
    return (x + s * s * score) / a


class ScoreModel(nn.Module):
    """A trained score ``s_theta(x, t) ~ grad log p_t(x)`` for one SDE.

    Args:
        net: raw network ``f(x, t)`` with output shaped like x.
        sde: the forward SDE the model was trained for.
        data_std: overall standard deviation of the training data (input scaling).
        meta: free-form JSON-able facts kept with the checkpoint (data set name, shape...).
    """

    def __init__(self, net: nn.Module, sde: SDE, data_std: float = 1.0, meta: dict | None = None):
        super().__init__()
        self.net = net
        self.sde = sde
        self.data_std = float(data_std)
        self.meta = dict(meta or {})

    def c_in(self, t: torch.Tensor) -> torch.Tensor:
        a, s = self.sde.alpha(t), self.sde.sigma(t)
        return 1.0 / torch.sqrt(a * a * self.data_std**2 + s * s)

    def eps(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Predicted noise, shape of x (B, *D)."""
        tb = batch_time(t, x)
        x_in = x * append_dims(self.c_in(tb).to(x.dtype), x.ndim)
        return self.net(x_in, tb.to(x.dtype))

    def score(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """``s_theta(x, t) = -eps_theta / sigma(t)``, shape of x."""
        tb = batch_time(t, x)
        s = append_dims(self.sde.sigma(tb).to(x.dtype), x.ndim)
        return -self.eps(x, tb) / s

    def x0(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Tweedie's ``x0_hat``, shape of x."""
        tb = batch_time(t, x)
        return tweedie_x0(x, self.score(x, tb), tb, self.sde)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.score(x, t)

    def score_fn(self) -> ScoreFn:
        """A no-grad ``score(x, t)`` callable for the samplers."""

        @torch.no_grad()
        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.score(x, t)

        return fn

    def config(self) -> dict:
        """Everything needed to rebuild the model around its state dict."""
        return {
            "kind": "score",
            "net": net_config(self.net),
            "sde": self.sde.config(),
            "data_std": self.data_std,
            "meta": self.meta,
        }

    @classmethod
    def from_config(cls, cfg: dict) -> ScoreModel:
        """Inverse of :meth:`config` (weights not loaded)."""
        try:
            return cls(
                build_net(cfg["net"]),
                sde_from_config(cfg["sde"]),
                data_std=cfg.get("data_std", 1.0),
                meta=cfg.get("meta"),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"score model config is incomplete or malformed: {e}") from None
