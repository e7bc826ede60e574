"""ScoreModel: the one place that converts between eps, x0 and score parametrizations.

The network ``F`` sees the scaled input ``c_in x_t`` of ``x_t = alpha x_0 + sigma eps``, with
``c_in = 1 / sqrt(alpha^2 s_data^2 + sigma^2)`` (unit-variance input at every t). Two readings of
its output (``ScoreModel.param``):

* ``"eps"``: ``F`` is the noise, ``eps_hat = F``.
* ``"edm"`` (Karras et al. 2022's preconditioning, in the VP SDE's scaled variables
  ``x~ = x_t / alpha``, ``sigma~ = sigma / alpha``): the denoiser is
  ``D = c_skip x~ + c_out F`` with ``c_skip = s_data^2 / (sigma~^2 + s_data^2)`` and
  ``c_out = sigma~ s_data / sqrt(sigma~^2 + s_data^2)``, so F predicts the noise at small
  sigma~ and the (scaled) data at large sigma~, and its training target has unit variance at
  every noise level. Then ``eps_hat = (x_t - alpha D) / sigma``.

In both, ``score = -eps_hat / sigma`` and Tweedie's ``x0_hat = (x + sigma^2 score) / alpha``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from geoflow.nets import build_net, net_config
from geoflow.sde import SDE, append_dims, sde_from_config

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PARAMS = ("eps", "edm")


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
        param: how the network's output is read, ``"eps"`` or ``"edm"`` (module docstring).
    """

    def __init__(
        self,
        net: nn.Module,
        sde: SDE,
        data_std: float = 1.0,
        meta: dict | None = None,
        param: str = "eps",
    ):
        super().__init__()
        if param not in PARAMS:
            raise ValueError(f"unknown score parametrization {param!r}; valid: {', '.join(PARAMS)}")
        self.net = net
        self.sde = sde
        self.data_std = float(data_std)
        self.meta = dict(meta or {})
        self.param = param

    def c_in(self, t: torch.Tensor) -> torch.Tensor:
        a, s = self.sde.alpha(t), self.sde.sigma(t)
        return 1.0 / torch.sqrt(a * a * self.data_std**2 + s * s)

    def edm_scales(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c_skip, c_out)`` of the EDM denoiser at times t (B,), in the scaled variables."""
        st = self.sde.sigma(t) / self.sde.alpha(t)
        sd2 = self.data_std**2
        return sd2 / (st * st + sd2), st * self.data_std / torch.sqrt(st * st + sd2)

    def eps(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Predicted noise ``eps_hat``, shape of x (B, *D)."""
        tb = batch_time(t, x)
        x_in = x * append_dims(self.c_in(tb).to(x.dtype), x.ndim)
        f = self.net(x_in, tb.to(x.dtype))
        if self.param == "eps":
            return f
        a = append_dims(self.sde.alpha(tb).to(x.dtype), x.ndim)
        s = append_dims(self.sde.sigma(tb).to(x.dtype), x.ndim)
        c_skip, c_out = (append_dims(c.to(x.dtype), x.ndim) for c in self.edm_scales(tb))
        denoised = c_skip * (x / a) + c_out * f
        return (x - a * denoised) / s

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
        """Everything needed to rebuild the model around its state dict.

        ``param`` is written only when it is not ``"eps"``, so an eps model's config (and with it the
        fingerprint its projection networks are tied to) is what it was before ``param`` existed.
        """
        cfg = {
            "kind": "score",
            "net": net_config(self.net),
            "sde": self.sde.config(),
            "data_std": self.data_std,
            "meta": self.meta,
        }
        if self.param != "eps":
            cfg["param"] = self.param
        return cfg

    @classmethod
    def from_config(cls, cfg: dict) -> ScoreModel:
        """Inverse of :meth:`config` (weights not loaded)."""
        try:
            return cls(
                build_net(cfg["net"]),
                sde_from_config(cfg["sde"]),
                data_std=cfg.get("data_std", 1.0),
                meta=cfg.get("meta"),
                param=cfg.get("param", "eps"),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"score model config is incomplete or malformed: {e}") from None
