"""Training: denoising score matching and the projection network's loss, one shared loop, progress callbacks.

DSM objective (eps parametrization): ``t ~ U(t_min, T)``, ``x_t = alpha(t) x_0 + sigma(t) z``,
``L = E || eps_theta(x_t, t) - z ||^2``; ``score = -eps / sigma``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral

import torch
from torch import nn

from geoflow.distributed import DistContext, ddp_optimise
from geoflow.images import _check_name, class_names, image_shape, load_image_set
from geoflow.nets import (
    MLP,
    Classifier,
    ClassifierConfig,
    MLPConfig,
    UNet,
    UNetConfig,
    build_net,
    net_config,
    seeded_init,
)
from geoflow.projection import ProjectionModel, check_train_mode, score_fingerprint
from geoflow.score import ScoreModel
from geoflow.sde import SDE, append_dims, paper_beta
from geoflow.validate import (
    LIMITS,
    check_device,
    check_mlp_training,
    check_work,
    net_activation_floats,
    parse_float,
    parse_int,
)

DataFn = Callable[[int, torch.Generator], torch.Tensor]
Progress = Callable[[int, int, float], None]
StopFlag = Callable[[], bool]
MAX_TRAIN_STEPS = LIMITS.train_steps  # defined once in geoflow.validate.LIMITS


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings: Adam with cosine decay and an EMA of the weights."""

    steps: int = 6000
    batch_size: int = 512
    lr: float = 2e-3
    ema: float = 0.999
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        # one message per field, naming it and its range (geoflow.validate.LIMITS)
        if isinstance(self.steps, bool) or not isinstance(self.steps, Integral):
            raise ValueError(f"steps must be an integer in [1, {MAX_TRAIN_STEPS}], got {self.steps!r}")
        parse_int(self.steps, "steps", 1, MAX_TRAIN_STEPS)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, Integral):
            raise ValueError(
                f"batch size must be an integer in [1, {LIMITS.batch_size}], got {self.batch_size!r}"
            )
        parse_int(self.batch_size, "batch size", 1, LIMITS.batch_size)
        parse_float(self.lr, "learning rate lr", 0.0, LIMITS.lr_max, lo_open=True)
        parse_float(self.ema, "EMA decay ema", 0.0, 1.0, hi_open=True)
        parse_int(self.seed, "seed", 0, LIMITS.seed)
        check_device(self.device)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run is stopped (usually the learning rate is too large)."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training diverged at step {step} (loss {loss}); try a smaller learning rate")
        self.step, self.loss = step, loss


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample (B,) tensor broadcast against x (B, *D) in x's dtype and device."""
    return append_dims(v.to(device=x.device, dtype=x.dtype), x.ndim)


def data_fn_from_tensor(data: torch.Tensor) -> DataFn:
    """Minibatches drawn with replacement from a fixed data set ``(n, *D)``."""

    def fn(n: int, g: torch.Generator) -> torch.Tensor:
        return data[torch.randint(0, data.shape[0], (n,), generator=g)]

    return fn


def make_score_model_2d(
    sde: SDE,
    data_std: float = 1.0,
    width: int = 128,
    depth: int = 3,
    meta: dict | None = None,
    seed: int | None = None,
) -> ScoreModel:
    """A fresh 2-D score model: MLP ``depth x width`` with a sinusoidal time embedding.

    With ``seed``, the initial weights are drawn from it (the global RNG state is left alone).
    """
    check_mlp_training(width, depth, 1)  # ranges and parameter count, before allocating
    cfg = MLPConfig(dim=2, width=width, depth=depth)
    net = MLP(cfg) if seed is None else seeded_init(lambda: MLP(cfg), seed)
    return ScoreModel(net, sde, data_std, meta)


def check_training_memory(net: nn.Module, batch_size: int) -> None:
    """Refuse a training whose estimated memory (activations, weights, Adam, EMA) exceeds the limit.

    Raises:
        ValueError: naming the estimate, the limit and the largest batch size that fits.
    """
    params = sum(p.numel() for p in net.parameters())
    acts = net_activation_floats(net_config(net), training=True)
    check_work(acts, batch_size, f"training at batch size {batch_size}", "--batch-size", overhead=20 * params)


def optimise(
    model: nn.Module,
    loss_fn: Callable[[torch.Generator], torch.Tensor],
    cfg: TrainConfig,
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    params: list[nn.Parameter] | None = None,
    ddp: DistContext | None = None,
) -> dict:
    """The shared loop: Adam + cosine LR + EMA; returns ``{"steps", "loss", "stopped"}``.

    ``loss_fn(generator)`` computes one minibatch loss. The EMA weights are loaded at the end.
    ``should_stop()`` is polled every step; a stop keeps the EMA weights so far. ``ddp`` (under
    torchrun, from :func:`geoflow.distributed.from_env`): this same loop on every rank, data-parallel
    (:func:`geoflow.distributed.ddp_optimise`: DDP-averaged gradients, rank-derived seeds).
    """
    if ddp is not None:
        return ddp_optimise(optimise, model, loss_fn, cfg, progress, should_stop, params, ddp)
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, cfg.steps) / cfg.steps))
    )
    ema = copy.deepcopy(model.state_dict())
    ema_loss, step, stopped = float("nan"), 0, False
    model.train()
    for step in range(1, cfg.steps + 1):
        if should_stop is not None and should_stop():
            stopped, step = True, step - 1
            break
        loss = loss_fn(g)
        if not torch.isfinite(loss):
            raise TrainingDiverged(step, loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    ema[k].copy_(v)
        ema_loss = loss.item() if step == 1 else 0.98 * ema_loss + 0.02 * loss.item()
        if progress is not None and (step % 50 == 0 or step == cfg.steps):
            progress(step, cfg.steps, ema_loss)
    model.load_state_dict(ema)
    model.eval()
    return {"steps": step, "loss": ema_loss, "stopped": stopped}


def sample_train_times(sde: SDE, n: int, g: torch.Generator) -> torch.Tensor:
    """Training times (n,), float64: half uniform on [t_min, T], half log-uniform.

    The log-uniform half puts more weight on small t, where the score of narrow modes is sharp;
    on eight_gaussians it took EM (N = 1000) KL from 0.096 (uniform t) to 0.053 at equal steps.
    Any positive weighting keeps the true score as the optimum of the DSM loss.
    """
    u = torch.rand(n, generator=g, dtype=torch.float64)
    uniform = sde.t_min + (sde.T - sde.t_min) * u
    log_uniform = sde.t_min * (sde.T / sde.t_min) ** torch.rand(n, generator=g, dtype=torch.float64)
    pick = torch.rand(n, generator=g) < 0.5
    return torch.where(pick, uniform, log_uniform)


# EDM's training noise levels (Karras et al. 2022): log sigma~ ~ N(P_MEAN, P_STD^2) in the scaled
# variables sigma~ = sigma / alpha; EDM_UNIFORM of each batch keeps sample_train_times' coverage
EDM_P_MEAN, EDM_P_STD, EDM_UNIFORM = -1.2, 1.2, 0.2


def edm_train_times(sde: SDE, n: int, g: torch.Generator, p_mean: float = EDM_P_MEAN) -> torch.Tensor:
    """Training times (n,), float64, for the ``"edm"`` parametrization.

    ``log sigma~ ~ N(p_mean, 1.2^2)`` (EDM's ``p_mean = -1.2``; a larger one trains the high noise
    levels, where a sample's class is decided, more often) mapped to t through the log-SNR
    ``lambda = -log sigma~`` (clipped to [t_min, T]); a fraction ``EDM_UNIFORM`` comes from
    :func:`sample_train_times`, so the largest and smallest noise levels, which the samplers visit,
    are still trained.
    """
    log_sig = p_mean + EDM_P_STD * torch.randn(n, generator=g, dtype=torch.float64)
    lam = (-log_sig).clamp(float(sde.log_snr(sde.T)), float(sde.log_snr(sde.t_min)))
    t = sde.t_from_log_snr(lam).clamp(sde.t_min, sde.T)
    pick = torch.rand(n, generator=g) < EDM_UNIFORM
    return torch.where(pick, sample_train_times(sde, n, g), t)


def dsm_loss(
    model: ScoreModel, x0: torch.Tensor, g: torch.Generator, p_mean: float = EDM_P_MEAN
) -> torch.Tensor:
    """One minibatch of the denoising score matching loss.

    ``"eps"`` models: ``|eps_hat - z|^2`` at :func:`sample_train_times`. ``"edm"`` models: EDM's
    weighting ``|D - x_0|^2 / c_out^2 = (1 + sigma~^2 / s_data^2) |eps_hat - z|^2`` (a unit-variance
    target for the network at every noise level) at :func:`edm_train_times` (``p_mean``). Any positive
    weighting keeps the true score as the optimum. Both are divided by the dimension.
    """
    sde = model.sde
    edm = model.param == "edm"
    b = x0.shape[0]
    t = (edm_train_times(sde, b, g, p_mean) if edm else sample_train_times(sde, b, g)).to(x0.device)
    z = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
    eps = model.eps(sde.marginal_sample(x0, t, noise=z), t)
    per = ((eps - z) ** 2).flatten(1).sum(1)
    if edm:
        st2 = (sde.sigma(t) / sde.alpha(t)) ** 2
        per = per * (1.0 + st2 / model.data_std**2).to(per.dtype)
    return per.mean() / x0[0].numel()


def train_score(
    model: ScoreModel,
    data: DataFn,
    cfg: TrainConfig = TrainConfig(),
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    ddp: DistContext | None = None,
    p_mean: float = EDM_P_MEAN,
) -> dict:
    """Train ``model`` by denoising score matching on minibatches from ``data(n, generator)``.

    Returns the loop's summary dict; the model ends in eval mode with its EMA weights. ``ddp``: one
    rank of a data-parallel job (see :func:`optimise`); ``cfg.batch_size`` is then per rank.
    ``p_mean``: an ``"edm"`` model's training noise levels (:func:`edm_train_times`).
    """
    parse_float(p_mean, "p_mean (mean log sigma/alpha of the training noise levels)", -5.0, 5.0)
    check_training_memory(model.net, cfg.batch_size)
    device = torch.device(cfg.device if ddp is None else ddp.device)
    model.to(device)

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        return dsm_loss(model, data(cfg.batch_size, g).to(device), g, p_mean)

    out = optimise(model, loss_fn, cfg, progress, should_stop, ddp=ddp)
    model.to("cpu")
    return out


# --------------------------------------------------------------------------- projection network
# random_dt training draws N log-uniformly in this range (dt = (T - t_min) / N)
RANDOM_N_RANGE = (5, 200)


def _training_times(
    sde: SDE, b: int, mode: str, n_steps: int | None, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(t, t')`` (B,) float64: steps of the uniform N-grid, or of a random step size."""
    if mode == "fixed_N":
        assert n_steps is not None
        ts = sde.time_grid(n_steps, "uniform")
        k = torch.randint(0, n_steps, (b,), generator=g)
        return ts[k], ts[k + 1]
    lo, hi = math.log(RANDOM_N_RANGE[0]), math.log(RANDOM_N_RANGE[1])
    n = torch.exp(lo + (hi - lo) * torch.rand(b, generator=g, dtype=torch.float64))
    dt = (sde.T - sde.t_min) / n
    t = sde.t_min + dt + (sde.T - sde.t_min - dt) * torch.rand(b, generator=g, dtype=torch.float64)
    return t, t - dt


def projection_loss(
    proj: ProjectionModel,
    score_model: ScoreModel,
    x0: torch.Tensor,
    g: torch.Generator,
    mode: str = "random_dt",
    n_steps: int | None = None,
) -> torch.Tensor:
    """One minibatch of method.md section 3's projection loss (score network frozen).

    ``x_t = a(t) x_0 + s(t) z``; ``x_pred = x_t + b (2 s_theta(x_t, t) + x_t) dt``;
    ``x_mean = a(t') x_0``; per sample ``|| x_pred + T - x_mean ||^2 + (sqrt(b) / 2) || T ||^2``,
    averaged over the batch and divided by the dimension (a constant, for readable numbers).

    Args:
        x0: data minibatch (B, *D).
    """
    sde = score_model.sde
    bsz = x0.shape[0]
    t, t_next = _training_times(sde, bsz, mode, n_steps, g)
    t, t_next = t.to(x0.device), t_next.to(x0.device)
    z = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
    x_t = sde.marginal_sample(x0, t, noise=z)
    b = paper_beta(sde, t)
    dt = _per_sample(t - t_next, x0)
    with torch.no_grad():
        s = score_model.score(x_t, t)
        # predict: the sampler's Euler step of the reverse drift, with the frozen score network
        x_pred = x_t - (sde.drift(x_t, t) - 2.0 * _per_sample(b, x0) * s) * dt
    x_mean = _per_sample(sde.alpha(t_next), x0) * x0
    T = proj(x_pred, t, t_next)
    fit = (x_pred + T - x_mean).flatten(1).pow(2).sum(1)
    penalty = 0.5 * torch.sqrt(b).to(x0.dtype) * T.flatten(1).pow(2).sum(1)
    return (fit + penalty).mean() / x0[0].numel()


def new_projection_model(
    score_model: ScoreModel,
    mode: str = "random_dt",
    n_steps: int | None = None,
    net_cfg: dict | None = None,
    score_name: str | None = None,
    warm_start: bool = True,
) -> ProjectionModel:
    """A fresh T network for ``score_model`` (same architecture unless ``net_cfg`` is given).

    With ``warm_start``, a matching architecture and an eps-predicting score network, T's network
    starts from the score network's (its output then starts as the eps-prediction; an ``"edm"``
    network's raw output is not one).
    """
    cfg = net_cfg if net_cfg is not None else net_config(score_model.net)
    net = build_net(dict(cfg))
    if warm_start and score_model.param == "eps" and cfg == net_config(score_model.net):
        net.load_state_dict(score_model.net.state_dict())
    return ProjectionModel(
        net,
        score_model.sde,
        score_model.data_std,
        score_sha256=score_fingerprint(score_model),
        score_name=score_name,
        train_mode=mode,
        n_steps=n_steps if mode == "fixed_N" else None,
        meta={k: score_model.meta[k] for k in ("data", "shape") if k in score_model.meta},
    )


def train_projection(
    score_model: ScoreModel,
    data_fn: DataFn,
    cfg: TrainConfig = TrainConfig(steps=2000),
    mode: str = "random_dt",
    n_steps: int | None = None,
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    *,
    net_cfg: dict | None = None,
    score_name: str | None = None,
    warm_start: bool = True,
    ddp: DistContext | None = None,
) -> ProjectionModel:
    """Train a projection network on method.md section 3's loss with the score network frozen.

    Args:
        score_model: the frozen score network (its weights are not touched).
        data_fn: ``data(n, generator) -> (n, *D)`` minibatches of x_0.
        cfg: optimisation settings (the shared loop of ``geoflow.train.optimise``).
        mode: ``"random_dt"`` (t uniform, N log-uniform in ``RANDOM_N_RANGE``) or ``"fixed_N"``
            (t on the uniform grid of ``n_steps`` steps).
        n_steps: the grid's N for ``fixed_N``.
        progress, should_stop: as in :func:`geoflow.train.train_score`.
        net_cfg: network config (default: the score network's).
        score_name: name recorded in the checkpoint.
        warm_start: start from the score network's weights when the architectures match.
        ddp: one rank of a data-parallel job (see :func:`optimise`); ``cfg.batch_size`` is per rank.

    Returns:
        the trained :class:`ProjectionModel` in eval mode (EMA weights), the loop's summary in
        ``model.meta["train"]``.
    """
    check_train_mode(mode, n_steps)
    check_training_memory(score_model.net, 2 * cfg.batch_size)  # T trains, the score network runs
    device = torch.device(cfg.device if ddp is None else ddp.device)
    proj = new_projection_model(score_model, mode, n_steps, net_cfg, score_name, warm_start)
    frozen = [p.requires_grad for p in score_model.parameters()]
    score_model.to(device).eval()
    for p in score_model.parameters():
        p.requires_grad_(False)
    proj.to(device)

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        return projection_loss(proj, score_model, data_fn(cfg.batch_size, g).to(device), g, mode, n_steps)

    try:
        out = optimise(proj, loss_fn, cfg, progress, should_stop, ddp=ddp)
    finally:
        for p, r in zip(score_model.parameters(), frozen, strict=True):
            p.requires_grad_(r)
        score_model.to("cpu")
    proj.to("cpu")
    proj.meta["train"] = {"steps": out["steps"], "loss": out["loss"], "batch_size": cfg.batch_size}
    if ddp is not None:
        proj.meta["train"].update(world_size=out["world_size"], global_batch=out["global_batch"])
    return proj


# --------------------------------------------------------------------------- image score models, classifier
def image_unet_config(name: str) -> UNetConfig:
    """The U-Net sized for an image set (small enough to train on a CPU in minutes)."""
    c, h, _ = image_shape(name)
    if name == "digits":
        return UNetConfig(in_ch=c, image_size=h, base_ch=32, ch_mult=(1, 2), groups=8)
    if name == "shapes32":
        # sized for GPU training (scripts/train_gpu.sh), yet about 1 GFLOP per image, so the Images
        # page still samples a 36-image grid at N = 20 in seconds on a CPU
        return UNetConfig(in_ch=c, image_size=h, base_ch=48, ch_mult=(1, 2, 2), n_res=2, temb_dim=128)
    return UNetConfig(in_ch=c, image_size=h, base_ch=12, ch_mult=(1, 2, 4), groups=4)


def make_image_score_model(
    name: str, sde: SDE, seed: int = 0, param: str = "eps", base_ch: int | None = None
) -> ScoreModel:
    """A fresh (untrained) score model for an image set.

    ``data_std`` is the pixel standard deviation of the training split; ``meta`` records the set's
    name and image shape; ``seed`` fixes the initial weights; ``param`` is the output's reading
    (``"eps"`` or ``"edm"``, :mod:`geoflow.score`); ``base_ch`` overrides the U-Net's width.
    """
    x, _ = load_image_set(name, "train")
    meta = {"data": name, "shape": list(image_shape(name))}
    ucfg = image_unet_config(name)
    if base_ch is not None:
        ucfg = dataclasses.replace(ucfg, base_ch=parse_int(base_ch, "base_ch", 4, 256))
    net = seeded_init(lambda: UNet(ucfg), seed)
    return ScoreModel(net, sde, data_std=float(x.std()), meta=meta, param=param)


def train_image_score(
    name: str,
    sde: SDE,
    cfg: TrainConfig,
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    ddp: DistContext | None = None,
    param: str = "eps",
    base_ch: int | None = None,
    p_mean: float = EDM_P_MEAN,
) -> tuple[ScoreModel, dict]:
    """Train a U-Net score model on an image set's training split by denoising score matching.

    Uses :func:`geoflow.train.train_score` (CPU by default, ``cfg.device="cuda"`` on a GPU).

    ``cfg.seed`` fixes both the initial weights and the minibatch/noise draws, so a run is
    reproducible. ``ddp``: one rank of a data-parallel job (see :func:`optimise`). ``param`` and
    ``base_ch``: as in :func:`make_image_score_model`; ``p_mean``: as in :func:`edm_train_times`.

    Returns:
        the trained model (on the CPU, eval mode, EMA weights) and the loop's summary dict.
    """
    model = make_image_score_model(name, sde, seed=cfg.seed, param=param, base_ch=base_ch)
    x, _ = load_image_set(name, "train")
    summary = train_score(model, data_fn_from_tensor(x), cfg, progress, should_stop, ddp=ddp, p_mean=p_mean)
    if param == "edm":
        summary["p_mean"] = p_mean
    return model, summary


CLASSIFIER_STEPS = 1500
CLASSIFIER_BATCH = 128


def classifier_config(name: str) -> ClassifierConfig:
    """The feature classifier (the Fréchet judge) sized for an image set."""
    _check_name(name)
    # half the width at 16x16 keeps the cost per image about that of the 8x8 net; the colour set
    # needs more: 8 kinds in any colour, plain or striped
    width = {"digits": 32, "shapes": 16}.get(name, 24)
    c, n_classes = image_shape(name)[0], len(class_names(name))
    return ClassifierConfig(data=name, in_ch=c, n_classes=n_classes, width=width)


def train_classifier(
    name: str,
    steps: int = CLASSIFIER_STEPS,
    seed: int = 0,
    device: str = "cpu",
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    batch_size: int = CLASSIFIER_BATCH,
    lr: float = 2e-3,
) -> tuple[Classifier, dict]:
    """Train the feature classifier of an image set on its training split (cross-entropy).

    Minibatches are drawn with replacement and lightly augmented by a random shift of up to one
    pixel, so the classifier does not memorise the small digits training set. The shared loop
    (Adam, cosine decay, EMA 0.99) of :func:`geoflow.train.optimise`.

    Returns:
        the classifier (CPU, eval mode) and the summary dict with ``test_accuracy`` added.
    """
    _check_name(name)
    x, y = load_image_set(name, "train")
    ccfg = classifier_config(name)
    model = seeded_init(lambda: Classifier(ccfg), seed)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, ema=0.99, seed=seed, device=device)
    dev = torch.device(device)
    model.to(dev)

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
        shift = torch.randint(-1, 2, (2,), generator=g).tolist()
        xb = torch.roll(x[idx], shifts=shift, dims=(2, 3)).to(dev)
        return nn.functional.cross_entropy(model(xb), y[idx].to(dev))

    summary = optimise(model, loss_fn, cfg, progress, should_stop)
    model.to("cpu")
    from geoflow.metrics import accuracy  # here: metrics loads POT and SciPy, which training never needs

    xt, yt = load_image_set(name, "test")
    summary["test_accuracy"] = accuracy(model, xt, yt)
    return model, summary
