"""``geoflow samplers``: every sampler of the registry with its grid spacing and NFE."""

from __future__ import annotations

import argparse
from typing import Any

from geoflow.cli.common import add_command
from geoflow.registry import SAMPLER_NAMES, get_sampler


def cmd_samplers(args: argparse.Namespace) -> int:
    """List the samplers with their default grid spacing and NFE at N steps."""
    for name in SAMPLER_NAMES:
        info = get_sampler(name)
        print(f"{name:28s} {info.label:45s} spacing={info.spacing:8s} NFE(N=20)={info.nfe(20, True)}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``samplers`` to the command tree."""
    add_command(subparsers, "samplers", help="list the samplers").set_defaults(fn=cmd_samplers)
