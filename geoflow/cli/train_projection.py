"""``geoflow train-projection``: the projection network T of a score network (method.md section 3).

The score network (a pretrained name or a file) must fit the data (2-D or the image set's shape);
``--out`` is checked before training; the checkpoint is written atomically. Under ``torchrun`` the
training is data-parallel, as for ``geoflow train`` (``--batch-size`` per process; rank 0 writes).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from geoflow import distributed
from geoflow.checkpoints import load_model, load_pretrained, pretrained_names, save_model
from geoflow.cli.common import (
    UserError,
    add_command,
    add_optim_args,
    add_run_args,
    add_source,
    check_model_data,
    choice_arg,
    float_arg,
    int_arg,
    limits_epilog,
    run_training_job,
    training_run,
)
from geoflow.densities import load_density
from geoflow.projection import TRAIN_MODES
from geoflow.score import ScoreModel
from geoflow.train import DataFn, TrainConfig, data_fn_from_tensor, train_projection
from geoflow.validate import LIMITS


def projection_name(score_name: str) -> str:
    """Pretrained name of the projection network for a score network name (``<name>-proj``)."""
    return f"{score_name}-proj"


def _load_score_model(args: argparse.Namespace) -> tuple[ScoreModel, str]:
    source = args.data if args.data else Path(args.density).stem
    name = args.score or f"{source}-vp"
    if Path(name).suffix == ".safetensors":
        model = load_model(name, expect_kind="score")
    else:
        valid = pretrained_names("score")
        if name not in valid:
            raise UserError(
                f"no pretrained score model {name!r}; pass a .safetensors file or one of: {', '.join(valid)}"
            )
        model = load_pretrained(name, expect_kind="score")
    assert isinstance(model, ScoreModel)
    check_model_data(model, args.data, Path(name).name)
    return model, name


def _data_fn(args: argparse.Namespace) -> DataFn:
    if args.data:
        from geoflow.images import load_image_set

        x, _ = load_image_set(args.data, "train")
        return data_fn_from_tensor(x)
    dens = load_density(args.density)
    return lambda n, g: dens.sample(n, g).float()


def cmd_train_projection(args: argparse.Namespace) -> int:
    """Train the projection network T of a score network and save it."""
    return run_training_job(args, _train_projection)


def _train_projection(args: argparse.Namespace, out: Path, ddp: distributed.DistContext | None) -> int:
    data = _data_fn(args)
    score, score_name = _load_score_model(args)
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        ema=args.ema,
        seed=args.seed,
        device=args.device if ddp is None else ddp.device,
    )
    n_steps = args.n_steps if args.mode == "fixed_N" else None
    with training_run(cfg.steps, "train-projection", args.lr, ddp, args.batch_size) as run:
        proj = train_projection(
            score,
            data,
            cfg,
            args.mode,
            n_steps,
            progress=run.update,
            score_name=Path(score_name).stem,
            ddp=ddp,
        )
    secs = run.seconds
    if ddp is not None and not ddp.is_main:
        return 0  # rank 0 writes the checkpoint (every rank holds the same weights)
    save_model(proj, out, extra={"train": {**proj.meta["train"], "seconds": round(secs, 1), "lr": args.lr}})
    print(f"trained {args.mode} projection for {score_name} in {secs:.1f} s; wrote {out}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``train-projection`` to the command tree."""
    p = add_command(
        subparsers,
        "train-projection",
        help="train a projection network T (predict-project)",
        epilog=limits_epilog(
            f"--steps <= {LIMITS.train_steps}, --batch-size <= {LIMITS.batch_size}, "
            f"--n-steps in [2, {LIMITS.projection_grid}]",
        ),
    )
    add_source(p)
    p.add_argument("--score", default=None, help="PRETRAINED_NAME or FILE.safetensors (default <data>-vp)")
    p.add_argument(
        "--mode",
        type=choice_arg("mode", TRAIN_MODES),
        default="random_dt",
        help=f"{' | '.join(TRAIN_MODES)} (default random_dt)",
    )
    p.add_argument(
        "--n-steps",
        type=int_arg("n-steps", 2, LIMITS.projection_grid),
        default=20,
        help=f"the sampling grid's N for --mode fixed_N, in [2, {LIMITS.projection_grid}] (default 20)",
    )
    add_optim_args(p, 3000, lr=1e-3, lr_shown="1e-3", batch_note="; per process under torchrun")
    p.add_argument(
        "--ema",
        type=float_arg("ema", 0.0, 1.0, hi_open=True),
        default=0.995,
        help="EMA decay of the weights in [0, 1) (default 0.995)",
    )
    add_run_args(p)
    p.set_defaults(fn=cmd_train_projection)


__all__ = ["cmd_train_projection", "projection_name", "register"]
