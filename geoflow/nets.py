"""Raw networks. They know nothing about SDEs: input ``(x, t)``, output a tensor shaped like x.

``MLP`` serves 2-D data; image networks live beside it (see ``NET_KINDS``). Time enters through
sinusoidal features of t in [0, 1]. The image :class:`Classifier` (input x only, output logits) is
the feature network of the classifier-feature Fréchet distance (:func:`geoflow.metrics.image_quality`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
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


def seeded_init(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a module with its default initialisation drawn from ``seed``.

    torch's layer constructors draw from the global generator; ``fork_rng`` confines the seeding to
    this call and restores the caller's global state afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


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


# --------------------------------------------------------------------------- image U-Net
@dataclass(frozen=True)
class UNetConfig:
    """A small U-Net for ``(B, C, H, W)`` images (DDPM-style, no attention).

    ``len(ch_mult)`` resolution levels, level i with ``base_ch * ch_mult[i]`` channels and
    ``n_res`` residual blocks (GroupNorm, SiLU, 3x3 convs, the time embedding added per block);
    ``image_size`` must be divisible by ``2 ** (len(ch_mult) - 1)``.
    """

    in_ch: int = 1
    image_size: int = 8
    base_ch: int = 32
    ch_mult: tuple[int, ...] = (1, 2)
    n_res: int = 1
    temb_dim: int = 64
    groups: int = 8
    kind: str = "unet"

    def __post_init__(self) -> None:
        # JSON round trips turn the tuple into a list; keep the config hashable
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        if self.in_ch < 1 or self.base_ch < 1 or self.n_res < 1 or not self.ch_mult:
            raise ValueError("need in_ch, base_ch, n_res >= 1 and at least one level in ch_mult")
        if self.image_size % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2^{len(self.ch_mult) - 1} "
                f"({len(self.ch_mult)} levels)"
            )
        if any((self.base_ch * m) % self.groups for m in self.ch_mult):
            raise ValueError(f"every level's channel count must be divisible by groups={self.groups}")


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + time embedding, GroupNorm-SiLU-conv, + skip."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        # per-channel shift from the time embedding: (B, C) -> (B, C, 1, 1)
        h = h + self.temb(emb)[..., None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    """``f(x, t)`` for images x of shape (B, C, H, W), t of shape (B,) -> (B, C, H, W).

    Down path: per level ``n_res`` residual blocks, then a stride-2 conv (except the last level);
    two blocks in the middle; up path: per level the skip of the same level concatenated,
    ``n_res`` blocks, then nearest upsampling + conv. The output conv starts at zero, so an
    untrained net predicts eps = 0.
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chs = [cfg.base_ch * m for m in cfg.ch_mult]
        g, td = cfg.groups, cfg.temb_dim
        self.temb = nn.Sequential(nn.Linear(td, td), nn.SiLU(), nn.Linear(td, td))
        self.conv_in = nn.Conv2d(cfg.in_ch, chs[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = chs[0]
        for i, ch in enumerate(chs):
            blocks = nn.ModuleList()
            for _ in range(cfg.n_res):
                blocks.append(_ResBlock(c, ch, td, g))
                c = ch
            self.down.append(blocks)
            last = i == len(chs) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([_ResBlock(c, c, td, g), _ResBlock(c, c, td, g)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(chs))):
            blocks = nn.ModuleList()
            for k in range(cfg.n_res):
                # the first block of a level takes the concatenated skip
                blocks.append(_ResBlock(c + chs[i] if k == 0 else chs[i], chs[i], td, g))
                c = chs[i]
            self.up.append(blocks)
            self.upsample.append(
                nn.Identity()
                if i == 0
                else nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1))
            )
        self.norm_out = nn.GroupNorm(g, c)
        self.conv_out = nn.Conv2d(c, cfg.in_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.temb(timestep_embedding(t, self.cfg.temb_dim).to(x.dtype))
        h = self.conv_in(x)
        skips = []
        for blocks, down in zip(self.down, self.downsample, strict=True):
            for blk in blocks:
                h = blk(h, emb)
            skips.append(h)
            h = down(h)
        for blk in self.mid:
            h = blk(h, emb)
        for blocks, up in zip(self.up, self.upsample, strict=True):
            h = torch.cat([h, skips.pop()], dim=1)
            for blk in blocks:
                h = blk(h, emb)
            h = up(h)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


NET_KINDS["unet"] = (UNetConfig, UNet)


# --------------------------------------------------------------------------- image classifier
@dataclass(frozen=True)
class ClassifierConfig:
    """A small CNN: two conv stages (GroupNorm, SiLU), pooling to 2x2, a feature layer, logits."""

    data: str = "digits"
    in_ch: int = 1
    n_classes: int = 10
    width: int = 32
    feat_dim: int = 64
    kind: str = "classifier"


class Classifier(nn.Module):
    """Image classifier whose penultimate layer is the feature space of the Fréchet distance.

    Input ``(B, C, H, W)`` in [-1, 1]; ``features`` -> ``(B, feat_dim)``; ``forward`` -> logits
    ``(B, n_classes)``.
    """

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width

        def conv(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]

        self.body = nn.Sequential(
            *conv(cfg.in_ch, w),
            *conv(w, w),
            nn.AvgPool2d(2),
            *conv(w, 2 * w),
            *conv(2 * w, 2 * w),
            # 2x2 keeps coarse position information in the features (where a shape sits)
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * w, cfg.feat_dim),
            nn.SiLU(),
        )
        self.head = nn.Linear(cfg.feat_dim, cfg.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features, (B, feat_dim)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities ``(n, n_classes)`` and features ``(n, feat_dim)``, in batches.

        Batches of 256: on a CPU, 1000 32x32 images at a time ran 2.5x slower (cache-bound).
        """
        probs, feats = [], []
        for i in range(0, x.shape[0], batch):
            f = self.features(x[i : i + batch].float())
            feats.append(f)
            probs.append(torch.softmax(self.head(f), dim=1))
        return torch.cat(probs), torch.cat(feats)

    def config(self) -> dict:
        """Rebuild info for :func:`geoflow.checkpoints.save_model` / ``load_model``."""
        return asdict(self.cfg)

    @classmethod
    def from_config(cls, cfg: dict) -> Classifier:
        """Inverse of :meth:`config` (weights not loaded); extra checkpoint keys are ignored."""
        fields = set(ClassifierConfig.__dataclass_fields__)
        try:
            return cls(ClassifierConfig(**{k: v for k, v in cfg.items() if k in fields}))
        except TypeError as e:
            raise ValueError(f"classifier config is malformed: {e}") from None
