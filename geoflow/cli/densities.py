"""``geoflow densities``: the named 2-D densities and the image sets."""

from __future__ import annotations

import argparse
from typing import Any

from geoflow.cli.common import add_command
from geoflow.densities import DENSITY_NAMES, PRESETS, GaussianMixture
from geoflow.images import IMAGE_SETS


def cmd_densities(args: argparse.Namespace) -> int:
    """List the named densities (with whether their score is exact) and the image sets."""
    for name in DENSITY_NAMES:
        d = PRESETS[name]()
        exact = "exact score" if isinstance(d, GaussianMixture) else "samples only"
        doc = (PRESETS[name].__doc__ or d.__doc__ or "").strip().splitlines()[0]
        print(f"{name:18s} {exact:13s} {doc}")
    print("image sets:", ", ".join(IMAGE_SETS))
    return 0


def register(subparsers: Any) -> None:
    """Add ``densities`` to the command tree."""
    add_command(subparsers, "densities", help="list the named densities").set_defaults(fn=cmd_densities)
