"""Raw networks. They know nothing about SDEs: input ``(x, t)``, output a tensor shaped like x.

``MLP`` serves 2-D data; image networks live beside it (see ``NET_KINDS``). Time enters through
sinusoidal features of t in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of ``t`` (shape (B,)) -> (B, dim); frequencies geometric in [1, max_period]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None] * max_period / 4.0
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


@dataclass(frozen=True)
class MLPConfig:
    """An MLP on ``[x, emb(t)]``: ``depth`` hidden layers of ``width`` units, SiLU."""

    dim: int = 2
    width: int = 128
    depth: int = 3
    temb_dim: int = 32
    kind: str = "mlp"


class MLP(nn.Module):
    """``f(x, t)`` for x of shape (B, dim), t of shape (B,) -> (B, dim)."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        d_in = cfg.dim + cfg.temb_dim
        for _ in range(cfg.depth):
            layers += [nn.Linear(d_in, cfg.width), nn.SiLU()]
            d_in = cfg.width
        layers.append(nn.Linear(d_in, cfg.dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.cfg.temb_dim)
        return self.net(torch.cat([x, emb.to(x.dtype)], dim=1))


NET_KINDS: dict[str, tuple[type, type]] = {"mlp": (MLPConfig, MLP)}


def build_net(cfg_dict: dict) -> nn.Module:
    """Build a network from its config dict (``kind`` selects the class; no string eval)."""
    kind = cfg_dict.get("kind", "mlp")
    if kind not in NET_KINDS:
        raise ValueError(f"unknown network kind {kind!r}; valid: {', '.join(NET_KINDS)}")
    cfg_cls, net_cls = NET_KINDS[kind]
    fields = set(cfg_cls.__dataclass_fields__)
    unknown = set(cfg_dict) - fields
    if unknown:
        raise ValueError(f"network config has unknown fields {sorted(unknown)}")
    return net_cls(cfg_cls(**cfg_dict))


def net_config(net: nn.Module) -> dict:
    """The config dict of a network built by :func:`build_net`."""
    return asdict(net.cfg)  # type: ignore[arg-type]
