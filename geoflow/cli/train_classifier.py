"""``geoflow train-classifier``: the feature classifier of an image set (for the Frechet distance)."""

from __future__ import annotations

import argparse
from typing import Any

from geoflow.checkpoints import save_model
from geoflow.cli.common import (
    DEVICE_HELP,
    SEED_HELP,
    add_command,
    choice_arg,
    device_arg,
    int_arg,
    limits_epilog,
    progress_bar,
    seed_arg,
    threads,
)
from geoflow.cli.train import diverged
from geoflow.images import IMAGE_SETS
from geoflow.train import TrainingDiverged, train_classifier
from geoflow.validate import LIMITS, check_output_path


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Train the feature classifier of an image set and save it."""
    out = check_output_path(args.out, (".safetensors",))
    threads()
    update, close = progress_bar(args.steps, "classifier")
    try:
        model, summary = train_classifier(
            args.data, steps=args.steps, seed=args.seed, device=args.device, progress=update
        )
    except TrainingDiverged as e:
        raise diverged(e, 2e-3) from None
    finally:
        close()
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
    c.add_argument(
        "--steps",
        type=int_arg("steps", 1, LIMITS.train_steps),
        default=3000,
        help=f"optimisation steps in [1, {LIMITS.train_steps}] (default 3000)",
    )
    c.add_argument("--seed", type=seed_arg, default=0, help=SEED_HELP)
    c.add_argument("--device", type=device_arg, default="cpu", help=DEVICE_HELP)
    c.add_argument("--out", required=True, help="output .safetensors (checked before training)")
    c.set_defaults(fn=cmd_train_classifier)
