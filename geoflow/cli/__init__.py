"""Command line: ``geoflow densities | samplers | train | sample | flow | bench | train-projection |
train-classifier`` (also ``python -m geoflow ...``).

One module per subcommand, each with ``register(subparsers)``; shared helpers in
:mod:`geoflow.cli.common`. Every user error is one line ``geoflow <command>: error: <message>`` and
exit status 2; an unexpected error is one line naming the command and its inputs and exit status 1;
``--debug`` shows the traceback. The limits are in ``geoflow.validate.LIMITS`` and each command's
``--help``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from geoflow.cli import bench, densities, flow, sample, samplers, train, train_classifier, train_projection
from geoflow.cli.common import DEBUG_HELP, EXIT_USER, Parser, run_command

COMMANDS = (densities, samplers, train, sample, flow, bench, train_projection, train_classifier)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    p = Parser(
        prog="geoflow",
        description="See how score-based diffusion models work: train, sample, flows, benchmarks.",
        epilog="exit status: 0 done, 2 a user error (one line on stderr), 1 an internal error; "
        "each command's --help states its limits",
    )
    p.add_argument("--debug", action="store_true", default=False, help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geoflow`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help (0) or a usage error, already printed as one line (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USER)
    return run_command(args)


__all__ = ["build_parser", "main"]


if __name__ == "__main__":
    sys.exit(main())
