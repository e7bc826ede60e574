"""``geoflow train-classifier``: the feature classifier of an image set (for the Frechet distance)."""

from __future__ import annotations

import argparse
from typing import Any

from geoflow.checkpoints import save_model
from geoflow.cli.common import (
    add_command,
    add_optim_args,
    add_run_args,
    choice_arg,
    limits_epilog,
    threads,
    training_run,
)
from geoflow.images import IMAGE_SETS
from geoflow.train import train_classifier
from geoflow.validate import LIMITS, check_output_path


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Train the feature classifier of an image set and save it."""
    out = check_output_path(args.out, (".safetensors",))
    threads()
    with training_run(args.steps, "classifier", 2e-3) as run:
        model, summary = train_classifier(
            args.data, steps=args.steps, seed=args.seed, device=args.device, progress=run.update
        )
    save_model(model, out, extra={"train": summary})
    print(f"wrote {out} ({summary})")
    return 0


def register(subparsers: Any) -> None:
    """Add ``train-classifier`` to the command tree."""
    c = add_command(
        subparsers,
        "train-classifier",
        help="train an image set's feature classifier",
        epilog=limits_epilog(f"--steps <= {LIMITS.train_steps}"),
    )
    c.add_argument(
        "--data", required=True, type=choice_arg("image set", IMAGE_SETS), help=f"{' | '.join(IMAGE_SETS)}"
    )
    add_optim_args(c, 3000)
    add_run_args(c)
    c.set_defaults(fn=cmd_train_classifier)
