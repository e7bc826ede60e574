"""What the subcommands share: the parser class, argument types built on :mod:`geoflow.validate`,
the top-level error handling, the thread setting, the progress bar and atomic output writers.

Every user error is one line ``geoflow <command>: error: <message>`` and exit status 2; an
unexpected error is one line naming the command and its inputs and exit status 1 (``--debug``
adds the traceback).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoflow.atomic import atomic_write
from geoflow.samplers import SamplerDiverged
from geoflow.train import TrainingDiverged
from geoflow.validate import (
    LIMITS,
    InputError,
    check_choice,
    check_device,
    check_output_path,
    check_seed,
    fmt_bytes,
    one_line,
    parse_float,
    parse_int,
)

if TYPE_CHECKING:
    from geoflow.distributed import DistContext

UserError = InputError  # a problem with what the user asked for: printed as one line, exit 2
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, SamplerDiverged, TrainingDiverged, OSError)
EXIT_USER, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 1, 130


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``geoflow train: error: argument --seed: ...`` and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER, f"{self.prog}: error: {one_line(message)}\n")


# --------------------------------------------------------------------------- argument types
def _arg_type(check: Callable[[str], Any], metavar: str) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            return check(raw)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = metavar  # argparse names the type in its own messages
    return parse


def int_arg(name: str, lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[lo, hi]`` (one clear message, any size)."""
    return _arg_type(lambda raw: parse_int(raw, name, lo, hi), "integer")


def float_arg(
    name: str, lo: float | None, hi: float | None, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in the range (NaN and inf refused)."""
    return _arg_type(lambda raw: parse_float(raw, name, lo, hi, lo_open=lo_open, hi_open=hi_open), "number")


def choice_arg(name: str, choices: Sequence[str]) -> Callable[[str], str]:
    """An argparse ``type``: one of ``choices`` (``unknown <name> 'x'; valid: a, b``)."""
    return _arg_type(lambda raw: check_choice(raw, name, choices), "choice")


seed_arg = _arg_type(check_seed, "seed")
device_arg = _arg_type(check_device, "device")
SEED_HELP = f"random seed, an integer in [0, {LIMITS.seed}] (default %(default)s)"
DEVICE_HELP = "cpu, cuda or cuda:N (must exist on this machine; default %(default)s)"


def add_command(sub: Any, name: str, help: str, description: str | None = None, epilog: str = "") -> Parser:
    """A subcommand parser that also accepts ``--debug`` after the command name."""
    p = sub.add_parser(
        name,
        help=help,
        description=description or help,
        epilog=epilog or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return p


DEBUG_HELP = "show the traceback of an error"


def limits_epilog(*lines: str) -> str:
    """The ``--help`` footer that states a command's limits (all from ``geoflow.validate.LIMITS``)."""
    body = "\n".join(f"  {ln}" for ln in lines)
    return (
        f"limits (geoflow.validate.LIMITS, checked before any work):\n{body}\n"
        f"  memory of one network or exact-score call <= {fmt_bytes(LIMITS.work_bytes)} (estimated)\n"
        "exit status: 0 done, 2 a user error (one line on stderr), 1 an internal error"
    )


def add_source(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--density`` (2-D) or ``--data`` (an image set), one of them."""
    from geoflow.densities import DENSITY_NAMES
    from geoflow.images import IMAGE_SETS

    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument(
        "--density",
        help=f"a preset ({', '.join(DENSITY_NAMES)}), a .json mixture spec (at most "
        f"{LIMITS.components} components, {fmt_bytes(LIMITS.spec_bytes)}) or a .csv of points "
        f"({LIMITS.min_points} or more rows; more than {LIMITS.max_points} are subsampled)",
    )
    src.add_argument(
        "--data", type=choice_arg("image set", IMAGE_SETS), help=f"an image set ({', '.join(IMAGE_SETS)})"
    )


# --------------------------------------------------------------------------- running a command
def describe_inputs(args: argparse.Namespace, limit: int = 240) -> str:
    """The options a command ran with, as flags (``--density x --steps 10``), for error messages."""
    parts = []
    for key, value in vars(args).items():
        if key in ("fn", "func", "command", "debug") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {value}")
    return one_line(" ".join(parts) or "no options", limit)


def _user_message(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, InputError):
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        return one_line(f"{e.strerror or type(e).__name__}{where}" if e.strerror else e)
    return one_line(e, 600)


def run_command(args: argparse.Namespace) -> int:
    """Run ``args.fn(args)`` with the CLI's error handling; returns the exit status."""
    command = getattr(args, "command", "?")
    debug = bool(getattr(args, "debug", False))

    def show(
        message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        print(f"geoflow {command}: warning: {one_line(message, 300)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show  # one line per warning, never a source excerpt
        try:
            return int(args.fn(args) or 0)
        except USER_ERRORS as e:
            if debug:
                traceback.print_exc()
            print(f"geoflow {command}: error: {_user_message(e)}", file=sys.stderr)
            return EXIT_USER
        except KeyboardInterrupt:
            print(f"geoflow {command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as e:  # anything else is a bug: one line naming the command and its inputs
            if debug:
                traceback.print_exc()
            print(
                f"geoflow {command}: internal error ({type(e).__name__}: {one_line(e, 200)}) with "
                f"{describe_inputs(args)}; rerun with --debug for the traceback",
                file=sys.stderr,
            )
            return EXIT_INTERNAL


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``fn`` with the CLI's error handling (for callers that dispatch on ``args.func``)."""

    def call(args: argparse.Namespace) -> int:
        ns = argparse.Namespace(**{**vars(args), "fn": fn})
        return run_command(ns)

    return call


# --------------------------------------------------------------------------- shared helpers
def threads() -> None:
    """Torch's thread count: ``GEOFLOW_THREADS``, else half the cores (at most 4)."""
    import torch

    raw = os.environ.get("GEOFLOW_THREADS")
    if raw:
        torch.set_num_threads(parse_int(raw, "GEOFLOW_THREADS", 1, 256))
        return
    # oversubscription slows torch 20x on small machines: half the cores, at most 4
    torch.set_num_threads(max(1, min(4, (os.cpu_count() or 2) // 2)))


def progress_bar(total: int, desc: str) -> tuple[Callable[[int, int, float], None], Callable[[], None]]:
    """A tqdm bar on a terminal (none when stderr is not one, so logs hold only the result lines)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, disable=not sys.stderr.isatty())

    def update(step: int, _total: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.refresh()

    return update, bar.close


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    """Write an array as ``.npy``, atomically."""
    return atomic_write(path, lambda f: np.save(f, array))


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays as ``.npz``, atomically."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def write_csv(path: str | Path, array: np.ndarray, header: str) -> Path:
    """Write a 2-D array as CSV with a header row, atomically."""
    buf = io.StringIO()
    np.savetxt(buf, array, delimiter=",", header=header, comments="", fmt="%.6f")
    return atomic_write(path, buf.getvalue().encode())


def check_model_data(model: Any, image_set: str | None, what: str) -> None:
    """A network must fit the data it is used with: an image set's shape, or 2-D points."""
    from geoflow.images import image_shape
    from geoflow.run import model_shape

    shape = model_shape(model)
    want = tuple(image_shape(image_set)) if image_set else (2,)
    if shape != want:
        kind = f"an image model of shape {shape}" if len(shape) > 1 else f"a {shape[0]}-D model"
        target = f"image set {image_set!r}" if image_set else "a 2-D density"
        raise UserError(f"{what} is {kind}, but {target} needs shape {want}")


# --------------------------------------------------------------------------- training commands
def add_optim_args(
    p: argparse.ArgumentParser,
    steps: int,
    *,
    lr: float | None = None,
    lr_shown: str = "%(default)s",
    batch_note: str = "",
) -> None:
    """``--steps`` (default ``steps``) and, where ``lr`` is given, ``--batch-size`` and ``--lr``.

    Args:
        p: the command's parser.
        steps: the default number of optimisation steps.
        lr: the default Adam learning rate (None: the command has no ``--batch-size`` / ``--lr``).
        lr_shown: how ``--help`` writes the default learning rate.
        batch_note: what ``--help`` says of ``--batch-size`` after its range and default.
    """
    p.add_argument(
        "--steps",
        type=int_arg("steps", 1, LIMITS.train_steps),
        default=steps,
        help=f"optimisation steps in [1, {LIMITS.train_steps}] (default %(default)s)",
    )
    if lr is None:
        return
    p.add_argument(
        "--batch-size",
        type=int_arg("batch size", 1, LIMITS.batch_size),
        default=512,
        help=f"minibatch size in [1, {LIMITS.batch_size}] (default %(default)s){batch_note}",
    )
    p.add_argument(
        "--lr",
        type=float_arg("lr", 0.0, LIMITS.lr_max, lo_open=True),
        default=lr,
        help=f"Adam learning rate in (0, {LIMITS.lr_max:g}] (default {lr_shown})",
    )


def add_run_args(p: argparse.ArgumentParser) -> None:
    """``--seed``, ``--device`` and ``--out`` (a ``.safetensors``), the last flags of a training command."""
    p.add_argument("--seed", type=seed_arg, default=0, help=SEED_HELP)
    p.add_argument("--device", type=device_arg, default="cpu", help=DEVICE_HELP)
    p.add_argument("--out", required=True, help="output .safetensors (checked before training)")


def diverged(e: TrainingDiverged, lr: float) -> UserError:
    """The one-line message of a diverged training, naming the flag to change."""
    return UserError(
        f"training diverged at step {e.step} (loss {e.loss}) with --lr {lr:g}; try a smaller --lr"
    )


def rank_progress(
    ddp: DistContext | None, total: int, desc: str, batch_size: int
) -> tuple[Callable[[int, int, float], None] | None, Callable[[], None]]:
    """The progress bar on rank 0 (or without torchrun); under torchrun rank 0 first says the job's shape."""
    if ddp is not None and not ddp.is_main:
        return None, lambda: None
    if ddp is not None:
        print(ddp.describe(batch_size), flush=True)
    return progress_bar(total, desc)


def run_training_job(
    args: argparse.Namespace,
    body: Callable[[argparse.Namespace, Path, DistContext | None], int],
) -> int:
    """Check ``--out``, set the threads, then run ``body(args, out, ddp)`` as a (torchrun) job.

    ``ddp`` is None without torchrun (single-process); a finished rank ends in
    :func:`geoflow.distributed.leave`.
    """
    from geoflow import distributed

    out = check_output_path(args.out, (".safetensors",))
    threads()
    with distributed.job(args.device) as ddp:  # None without torchrun: single-process
        code = body(args, out, ddp)
    return distributed.leave(ddp, code)  # a finished rank ends here (see distributed.leave)


@dataclass
class TrainingRun:
    """What :func:`training_run` gives its block: the progress callback, then the seconds it took."""

    update: Callable[[int, int, float], None] | None
    seconds: float = 0.0


@contextmanager
def training_run(
    total: int, desc: str, lr: float, ddp: DistContext | None = None, batch_size: int = 0
) -> Iterator[TrainingRun]:
    """A training's progress bar (:func:`rank_progress`) and timer around its block.

    A :class:`~geoflow.train.TrainingDiverged` in the block becomes the one-line :func:`diverged`
    error naming ``lr``; the bar closes in every case, then ``seconds`` is set.
    """
    update, close = rank_progress(ddp, total, desc, batch_size)
    run = TrainingRun(update)
    t0 = time.perf_counter()
    try:
        yield run
    except TrainingDiverged as e:
        raise diverged(e, lr) from None
    finally:
        close()
        run.seconds = time.perf_counter() - t0
