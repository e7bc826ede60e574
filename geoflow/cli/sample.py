"""``geoflow sample``: samples from the prior through :func:`geoflow.run.run`, to ``.npy`` / ``.csv``.

The run is a :class:`geoflow.run.RunSpec` with ``start="prior"`` and ``record=0`` (no frames kept):
``--score`` is ``RunSpec.score``, ``--projection`` is ``RunSpec.projection``; ``--projection-file``
adds a projection network, checked against the score network (:func:`geoflow.run.model_source`).
Image sets (``--data``) also get a PNG grid of the first 64 samples next to the ``.npy``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from geoflow.atomic import atomic_write
from geoflow.checkpoints import load_model
from geoflow.cli.common import (
    SEED_HELP,
    UserError,
    add_command,
    add_source,
    float_arg,
    int_arg,
    limits_epilog,
    seed_arg,
    threads,
    write_csv,
    write_npy,
)
from geoflow.densities import PRESETS, load_density
from geoflow.projection import PROJECTION_KINDS, ProjectionModel
from geoflow.registry import SAMPLER_NAMES, get_sampler
from geoflow.run import PROJECTION_CHOICES, RunSpec, model_source, resolve_source, run
from geoflow.sde import SDE_NAMES, SPACINGS
from geoflow.validate import LIMITS, check_output_path


def _projection_source(args: argparse.Namespace, src: Any, density: Any) -> Any:
    """The score source with the projection network of ``--projection-file`` (checked to match)."""
    if src.model is None:
        raise UserError(
            "--projection-file needs a score network (--score FILE or a pretrained name), not the exact score"
        )
    path = Path(args.projection_file)
    proj = load_model(path, expect_kind="projection")
    assert isinstance(proj, ProjectionModel)
    try:
        return model_source(src.model, f"{src.key}+proj:{path.resolve()}", src.label, proj, density)
    except ValueError as e:
        raise UserError(f"{path.name}: {e}") from None


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample with a named sampler and write .npy / .csv (+ a PNG grid for images)."""
    image = args.data is not None
    out = check_output_path(args.out, (".npy", ".csv"))
    png = out.with_suffix(".png")
    if image:
        if out.suffix.lower() == ".csv":
            raise UserError("CSV output is for 2-D samples; use .npy for images")
        check_output_path(png, (".png",), "the PNG grid next to --out")
    threads()
    info = get_sampler(args.sampler)
    if (args.projection or args.projection_file) and not info.takes_projection:
        raise UserError(f"{args.sampler} takes no projection T; drop --projection/--projection-file")
    if image:
        density, data = None, args.data
    else:
        density = load_density(args.density)
        # a file's name (with its extension) never collides with a preset or an image set
        data = args.density if args.density in PRESETS else Path(args.density).name
    spec = RunSpec(
        data=data,
        score=args.score or "auto",
        sde=args.sde,
        sampler=args.sampler,
        steps=args.steps,
        spacing=args.spacing or "default",
        projection=args.projection or "auto",
        strength=args.strength,
        final_denoise=not args.no_final_denoise,
        seed=args.seed,
        n=args.n,
        start="prior",
        record=0,
    )
    spec.validate()
    src = resolve_source(spec, density)
    if args.projection_file:
        src = _projection_source(args, src, density)
    if info.has_strength:
        kind = spec.projection if info.takes_projection else "none (the score's Langevin projection)"
        print(f"projection: {kind}, strength {spec.effective_strength()}")
    ts = src.sde.time_grid(spec.steps, spec.grid_spacing())  # type: ignore[arg-type]
    print(
        f"sampler {args.sampler}, N={args.steps} steps, {spec.grid_spacing()} time grid "
        f"from t={float(ts[0]):g} to t={float(ts[-1]):g}, NFE={info.nfe(args.steps, spec.final_denoise)}, "
        f"score={src.label}, final denoise {'on' if spec.final_denoise else 'off'}"
    )
    traj = run(spec, density=density, source=src)
    if traj.error:
        raise UserError(traj.error)
    samples = traj.final.astype("float32")
    if out.suffix.lower() == ".npy":
        write_npy(out, samples)
    else:
        write_csv(out, samples, header="x,y")
    if image:
        from geoflow.export import save_image_grid  # here: plotly loads only for image output

        atomic_write(png, lambda f: save_image_grid(torch.from_numpy(samples[:64]), f))
        print(f"wrote {png}")
    print(f"wrote {out} {samples.shape}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``sample`` to the command tree."""
    s = add_command(
        subparsers,
        "sample",
        help="draw samples with a sampler",
        description="Draw samples from the prior with a sampler (geoflow.run) and write .npy or .csv.",
        epilog=limits_epilog(
            f"--steps <= {LIMITS.sample_steps}, --n <= {LIMITS.particles}, --strength <= {LIMITS.strength:g}",
            "an exact mixture score needs 40 bytes x n x components x dim per step; a network,"
            " its activations x n",
        ),
    )
    add_source(s)
    s.add_argument("--sde", choices=SDE_NAMES, default="vp")
    s.add_argument(
        "--sampler",
        default="euler_maruyama",
        help=f"one of: {', '.join(SAMPLER_NAMES)} (see `geoflow samplers`)",
    )
    s.add_argument(
        "--steps",
        type=int_arg("steps", 1, LIMITS.sample_steps),
        default=100,
        help=f"sampler steps N in [1, {LIMITS.sample_steps}] (default %(default)s)",
    )
    s.add_argument("--spacing", choices=SPACINGS, default=None, help="time grid (default: the sampler's)")
    s.add_argument(
        "--n",
        type=int_arg("n", 1, LIMITS.particles),
        default=1000,
        help=f"samples in [1, {LIMITS.particles}] (default %(default)s)",
    )
    s.add_argument("--seed", type=seed_arg, default=0, help=SEED_HELP)
    s.add_argument(
        "--score",
        default=None,
        help="auto (default: a shipped model, else the exact score) | exact | pretrained | "
        "PRETRAINED_NAME | FILE.safetensors",
    )
    s.add_argument("--no-final-denoise", action="store_true", help="keep the last step's noise")
    s.add_argument(
        "--projection",
        default=None,
        choices=PROJECTION_CHOICES,
        help=f"predict-project's T: auto (default) | {' | '.join(PROJECTION_KINDS)}",
    )
    s.add_argument("--projection-file", default=None, help="a projection network .safetensors")
    s.add_argument(
        "--strength",
        type=float_arg("strength", 0.0, LIMITS.strength),
        default=None,
        help=f"projection strength in [0, {LIMITS.strength:g}] (default: the sampler's)",
    )
    s.add_argument("--out", required=True, help="FILE.npy or FILE.csv (checked before sampling)")
    s.set_defaults(fn=cmd_sample)
