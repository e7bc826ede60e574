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
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoflow.atomic import atomic_write
from geoflow.samplers import SamplerDiverged
from geoflow.train import TrainingDiverged
from geoflow.validate import (
    LIMITS,
    InputError,
    check_choice,
    check_device,
    check_seed,
    fmt_bytes,
    one_line,
    parse_float,
    parse_int,
)

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
