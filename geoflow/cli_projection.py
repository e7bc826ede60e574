"""``geoflow train-projection`` and the projection resolution used by ``geoflow sample``.

Plugin of :mod:`geoflow.cli` (``register(subparsers)``). Errors are ``ValueError`` (the CLI prints
one line and exits with status 2).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from geoflow.checkpoints import load_model, load_pretrained, read_manifest, save_model
from geoflow.densities import Density, GaussianMixture, get_density, load_density
from geoflow.projection import (
    DEFAULT_STRENGTHS,
    PROJECTION_KINDS,
    TRAIN_MODES,
    USES_T,
    ProjectionModel,
    make_projection,
    train_projection,
)
from geoflow.samplers import Projection
from geoflow.score import ScoreModel
from geoflow.sde import SDE
from geoflow.train import TrainConfig, data_fn_from_tensor


def projection_name(score_name: str) -> str:
    """Pretrained name of the projection network for a score network name (``<name>-proj``)."""
    return f"{score_name}-proj"


def _score_name(model: ScoreModel) -> str | None:
    data = model.meta.get("data")
    return f"{data}-{model.sde.name}" if data else None


def _shipped_projection(model: ScoreModel) -> str | None:
    name = _score_name(model)
    if name is None:
        return None
    proj = projection_name(name)
    return proj if proj in read_manifest() else None


def _load_projection(model: ScoreModel, projection_file: str | None) -> ProjectionModel:
    if projection_file:
        proj = load_model(projection_file, expect_kind="projection")
        what = Path(projection_file).name
    else:
        name = _shipped_projection(model)
        if name is None:
            raise ValueError(
                "no shipped projection network for this score network; pass --projection-file "
                "(train one with `geoflow train-projection`) or use --projection tweedie"
            )
        proj = load_pretrained(name, expect_kind="projection")
        what = name
    assert isinstance(proj, ProjectionModel)
    try:
        proj.check_matches(model)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
    return proj


def _exact_score_fn(target: ScoreModel | Density, sde: SDE):
    dens = target
    if isinstance(target, ScoreModel):
        name = target.meta.get("data")
        try:
            dens = get_density(name) if name else None
        except ValueError:
            dens = None
    if not isinstance(dens, GaussianMixture):
        raise ValueError("--projection exact needs a Gaussian mixture density (its exact score)")
    return dens.score_fn(sde)


def resolve_projection(
    kind: str | None,
    strength: float | None,
    target: ScoreModel | Density,
    sde: SDE,
    projection_file: str | None = None,
    sampler: str = "predict_project",
) -> tuple[Projection | None, float]:
    """The projection hook and strength for ``geoflow sample --sampler predict_project...``.

    Args:
        kind: ``learned`` | ``tweedie`` | ``exact`` or None for the default: ``learned`` where a
            projection network is given or shipped (``<data>-vp-proj``), else ``tweedie`` for a
            score network and ``exact`` for a mixture sampled with its exact score.
        strength: the projection strength, or None for the sampler's measured default.
        target: the score network sampled with, or the density when sampling with its exact score.
        sde: the forward SDE.
        projection_file: a projection network ``.safetensors`` (checked against the score network).
        sampler: the predict-project sampler's registry name (variants differ in their defaults;
            the Langevin variant takes no T and gets None).

    Returns:
        ``(projection or None, strength)``.

    Raises:
        ValueError: unknown kind or sampler, missing or mismatched projection network.
    """
    if sampler not in DEFAULT_STRENGTHS:
        raise ValueError(
            f"unknown predict-project sampler {sampler!r}; valid: {', '.join(DEFAULT_STRENGTHS)}"
        )
    strength = DEFAULT_STRENGTHS[sampler] if strength is None else float(strength)
    if strength < 0:
        raise ValueError(f"--strength must be >= 0, got {strength}")
    if sampler not in USES_T:
        if kind is not None or projection_file:
            raise ValueError(f"{sampler} projects with the score itself; drop --projection/--projection-file")
        return None, strength
    model = target if isinstance(target, ScoreModel) else None
    if kind is None:
        if model is None:
            kind = "exact"
        else:
            kind = "learned" if projection_file or _shipped_projection(model) else "tweedie"
    if kind not in PROJECTION_KINDS:
        raise ValueError(f"unknown projection {kind!r}; valid: {', '.join(PROJECTION_KINDS)}")
    if kind == "learned":
        if model is None:
            raise ValueError("--projection learned needs a score network (not --score exact)")
        proj = _load_projection(model, projection_file)
        return make_projection("learned", score_fn=model.score_fn(), sde=sde, model=proj), strength
    if kind == "exact":
        return make_projection("exact", score_fn=_exact_score_fn(target, sde), sde=sde), strength
    score_fn = model.score_fn() if model is not None else _exact_score_fn(target, sde)
    return make_projection("tweedie", score_fn=score_fn, sde=sde), strength


# --------------------------------------------------------------------------- train-projection
def _load_score_model(args: argparse.Namespace) -> tuple[ScoreModel, str]:
    source = args.data if args.data else Path(args.density).stem
    name = args.score or f"{source}-vp"
    if Path(name).suffix == ".safetensors":
        model = load_model(name, expect_kind="score")
    else:
        if name not in read_manifest():
            valid = ", ".join(n for n, e in read_manifest().items() if e.get("kind") == "score")
            raise ValueError(
                f"no pretrained score model {name!r}; pass a .safetensors file or one of: {valid}"
            )
        model = load_pretrained(name, expect_kind="score")
    assert isinstance(model, ScoreModel)
    return model, name


def _data_fn(args: argparse.Namespace):
    if args.data:
        from geoflow.images import load_image_set

        x, _ = load_image_set(args.data, "train")
        return data_fn_from_tensor(x)
    dens = load_density(args.density)
    return lambda n, g: dens.sample(n, g).float()


def cmd_train_projection(args: argparse.Namespace) -> int:
    """Train the projection network T of a score network (method.md section 3) and save it."""
    from geoflow.cli import _progress_bar, _threads

    _threads()
    if args.mode not in TRAIN_MODES:
        raise ValueError(f"unknown --mode {args.mode!r}; valid: {', '.join(TRAIN_MODES)}")
    if not str(args.out).endswith(".safetensors"):
        raise ValueError(f"--out must end in .safetensors, got {args.out!r}")
    data = _data_fn(args)
    score, score_name = _load_score_model(args)
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        ema=args.ema,
        seed=args.seed,
        device=args.device,
    )
    n_steps = args.n_steps if args.mode == "fixed_N" else None
    update, close = _progress_bar(cfg.steps, "train-projection")
    t0 = time.perf_counter()
    try:
        proj = train_projection(
            score, data, cfg, args.mode, n_steps, progress=update, score_name=Path(score_name).stem
        )
    finally:
        close()
    secs = time.perf_counter() - t0
    save_model(
        proj, args.out, extra={"train": {**proj.meta["train"], "seconds": round(secs, 1), "lr": args.lr}}
    )
    print(f"trained {args.mode} projection for {score_name} in {secs:.1f} s; wrote {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train-projection`` to the ``geoflow`` command tree."""
    p = subparsers.add_parser("train-projection", help="train a projection network T (predict-project)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--density", help="a 2-D density preset, .json mixture or .csv")
    src.add_argument("--data", help="an image set (digits, shapes)")
    p.add_argument("--score", default=None, help="PRETRAINED_NAME or FILE.safetensors (default <data>-vp)")
    p.add_argument("--mode", default="random_dt", help=f"{' | '.join(TRAIN_MODES)} (default random_dt)")
    p.add_argument("--n-steps", type=int, default=20, help="the sampling grid's N for --mode fixed_N")
    p.add_argument("--steps", type=int, default=3000, help="optimisation steps")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.set_defaults(fn=cmd_train_projection)


__all__ = ["cmd_train_projection", "projection_name", "register", "resolve_projection"]
