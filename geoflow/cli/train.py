"""``geoflow train``: a score model on a 2-D density or an image set, saved as safetensors.

Everything is checked before training starts: the output path (writable, ``.safetensors``), the
numbers (ranges in ``--help``), the device, and the network's size and memory (estimated).

Under ``torchrun --standalone --nproc-per-node K -m geoflow train ...`` the training is
data-parallel (:mod:`geoflow.distributed`): ``--batch-size`` is per process, the global batch is K
times it (said on the first line), and rank 0 alone shows progress and writes the checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from geoflow import distributed
from geoflow.checkpoints import save_model
from geoflow.cli.common import (
    add_command,
    add_optim_args,
    add_run_args,
    add_source,
    int_arg,
    limits_epilog,
    run_training_job,
    training_run,
)
from geoflow.densities import load_density
from geoflow.sde import SDE_NAMES, make_sde
from geoflow.train import (
    TrainConfig,
    make_score_model_2d,
    train_image_score,
    train_score,
)
from geoflow.validate import LIMITS, check_mlp_training


def config_dict(cfg: TrainConfig) -> dict:
    """A TrainConfig as a plain dict (for the checkpoint's metadata)."""
    return {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}


def cmd_train(args: argparse.Namespace) -> int:
    """Train a score model on a 2-D density or an image set and save it as safetensors."""
    return run_training_job(args, _train)


def _train(args: argparse.Namespace, out: Path, ddp: distributed.DistContext | None) -> int:
    sde = make_sde(args.sde)
    device = args.device if ddp is None else ddp.device
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device)
    dens = None if args.data else load_density(args.density)
    if dens is not None:
        check_mlp_training(args.width, args.depth, args.batch_size)  # before any allocation
    with training_run(cfg.steps, "train", args.lr, ddp, args.batch_size) as run:
        if dens is None:
            model, summary = train_image_score(args.data, sde, cfg, progress=run.update, ddp=ddp)
        else:
            g = torch.Generator().manual_seed(args.seed + 10_000)
            data_std = float(dens.sample(10_000, g).std())
            model = make_score_model_2d(
                sde, data_std, width=args.width, depth=args.depth, meta={"data": dens.name}, seed=args.seed
            )
            summary = train_score(
                model, lambda n, gen: dens.sample(n, gen), cfg, progress=run.update, ddp=ddp
            )
    secs = run.seconds
    if ddp is not None and not ddp.is_main:
        return 0  # rank 0 writes the checkpoint (every rank holds the same weights)
    save_model(model, out, extra={"train": {**summary, "seconds": round(secs, 1), **config_dict(cfg)}})
    print(f"trained {summary['steps']} steps in {secs:.1f} s (loss {summary['loss']:.4f}); wrote {out}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``train`` to the command tree."""
    t = add_command(
        subparsers,
        "train",
        help="train a score model",
        description="Train a score model by denoising score matching and save it as .safetensors.",
        epilog=limits_epilog(
            f"--steps <= {LIMITS.train_steps}, --batch-size <= {LIMITS.batch_size}",
            f"--lr in (0, {LIMITS.lr_max:g}]",
            f"--width <= {LIMITS.width}, --depth <= {LIMITS.depth}, parameters <= {LIMITS.params:,}",
            "a diverging loss (NaN or inf) stops the run with a message; nothing is written",
        ),
    )
    add_source(t)
    t.add_argument("--sde", choices=SDE_NAMES, default="vp")
    add_optim_args(
        t, 6000, lr=2e-3, batch_note="; per process under torchrun, where the global batch is K times it"
    )
    t.add_argument(
        "--width",
        type=int_arg("width", 1, LIMITS.width),
        default=128,
        help=f"MLP width (2-D), in [1, {LIMITS.width}] (default %(default)s)",
    )
    t.add_argument(
        "--depth",
        type=int_arg("depth", 1, LIMITS.depth),
        default=3,
        help=f"MLP hidden layers (2-D), in [1, {LIMITS.depth}] (default %(default)s)",
    )
    add_run_args(t)
    t.set_defaults(fn=cmd_train)
