"""Command line: ``geoflow densities | samplers | train | sample | bench`` (+ flow, train-projection).

Every user error is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from geoflow.checkpoints import CheckpointError, load_model, load_pretrained, read_manifest, save_model
from geoflow.densities import DENSITY_NAMES, PRESETS, GaussianMixture, load_density
from geoflow.samplers import SamplerDiverged, get_sampler, sample, sampler_names
from geoflow.score import ScoreModel
from geoflow.sde import SDE_NAMES, SPACINGS, make_sde
from geoflow.train import TrainConfig, make_score_model_2d, train_classifier, train_image_score, train_score

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
BENCH_SUITES = ("samplers", "training", "projection", "wgf", "app")
PLUGINS = ("geoflow.cli_flow", "geoflow.cli_projection")


class UserError(ValueError):
    """A problem with what the user asked for: printed as one line."""


def _threads() -> None:
    if os.environ.get("GEOFLOW_THREADS"):
        torch.set_num_threads(int(os.environ["GEOFLOW_THREADS"]))
        return
    # oversubscription slows torch 20x on small machines: half the cores, at most 4
    torch.set_num_threads(max(1, min(4, (os.cpu_count() or 2) // 2)))


def _progress_bar(total: int, desc: str) -> tuple[Callable[[int, int, float], None], Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)

    def update(step: int, _total: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.refresh()

    return update, bar.close


def _is_image_data(args: argparse.Namespace) -> bool:
    return getattr(args, "data", None) is not None


def _images():
    try:
        return importlib.import_module("geoflow.images")
    except ImportError as e:  # pragma: no cover - the module ships with the package
        raise UserError(f"image support is unavailable ({e})") from None


# --------------------------------------------------------------------------- commands
def cmd_densities(args: argparse.Namespace) -> int:
    """List the named densities."""
    for name in DENSITY_NAMES:
        d = PRESETS[name]()
        exact = "exact score" if isinstance(d, GaussianMixture) else "samples only"
        doc = (PRESETS[name].__doc__ or d.__doc__ or "").strip().splitlines()[0]
        print(f"{name:18s} {exact:13s} {doc}")
    try:
        print("image sets:", ", ".join(_images().IMAGE_SETS))
    except (UserError, AttributeError):
        pass
    return 0


def cmd_samplers(args: argparse.Namespace) -> int:
    """List the samplers with their default grid spacing and NFE at N steps."""
    for name in sampler_names():
        info = get_sampler(name)
        print(f"{name:28s} {info.label:45s} spacing={info.spacing:8s} NFE(N=20)={info.nfe(20, True)}")
    return 0


def _load_score(args: argparse.Namespace, sde_name: str) -> tuple[Callable, ScoreModel | None, str]:
    """Resolve ``--score`` into a score function: exact, a pretrained name, or a file."""
    choice = args.score
    if not _is_image_data(args):
        load_density(args.density)  # unknown names fail here, listing the valid ones
    elif args.data not in _images().IMAGE_SETS:
        raise UserError(f"unknown image set {args.data!r}; valid: {', '.join(_images().IMAGE_SETS)}")
    if _is_image_data(args):
        default = f"{args.data}-{sde_name}"
    else:
        default = f"{Path(args.density).stem}-{sde_name}"
    if choice == "exact":
        if _is_image_data(args):
            raise UserError("--score exact needs a Gaussian mixture density, not an image set")
        dens = load_density(args.density)
        if not isinstance(dens, GaussianMixture):
            raise UserError(
                f"--score exact needs a Gaussian mixture (a mixture preset or a .json spec); "
                f"{args.density!r} has no exact score"
            )
        return dens.score_fn(make_sde(sde_name)), None, "exact"
    name = choice or default
    if choice and Path(choice).suffix == ".safetensors":
        model = load_model(choice, expect_kind="score")
    else:
        if name not in read_manifest():
            valid = ", ".join(n for n, e in read_manifest().items() if e.get("kind") == "score")
            raise UserError(
                f"no pretrained score model {name!r}; pass --score exact (mixtures), "
                f"a .safetensors file, or one of: {valid}"
            )
        model = load_pretrained(name, expect_kind="score")
    if model.sde.name != sde_name:
        raise UserError(f"the score model was trained for the {model.sde.name} SDE, not {sde_name}")
    return model.score_fn(), model, name


def cmd_train(args: argparse.Namespace) -> int:
    """Train a score model on a 2-D density or an image set and save it as safetensors."""
    _threads()
    sde = make_sde(args.sde)
    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device
    )
    update, close = _progress_bar(cfg.steps, "train")
    t0 = time.perf_counter()
    try:
        if _is_image_data(args):
            model, summary = train_image_score(args.data, sde, cfg, progress=update)
        else:
            dens = load_density(args.density)
            g = torch.Generator().manual_seed(args.seed + 10_000)
            data_std = float(dens.sample(10_000, g).std())
            model = make_score_model_2d(
                sde, data_std, width=args.width, depth=args.depth, meta={"data": dens.name}, seed=args.seed
            )
            summary = train_score(model, lambda n, gen: dens.sample(n, gen), cfg, progress=update)
    finally:
        close()
    secs = time.perf_counter() - t0
    save_model(model, args.out, extra={"train": {**summary, "seconds": round(secs, 1), **vars_cfg(cfg)}})
    print(f"trained {summary['steps']} steps in {secs:.1f} s (loss {summary['loss']:.4f}); wrote {args.out}")
    return 0


def vars_cfg(cfg: TrainConfig) -> dict:
    """TrainConfig as a plain dict."""
    return {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample with a named sampler and write .npy / .csv (+ a PNG grid for images)."""
    _threads()
    if args.n < 1 or args.n > 1_000_000:
        raise UserError(f"--n must be in [1, 1000000], got {args.n}")
    info = get_sampler(args.sampler)
    sde = make_sde(args.sde)
    score_fn, model, score_name = _load_score(args, args.sde)
    spacing = args.spacing or info.spacing
    ts = sde.time_grid(args.steps, spacing)
    g = torch.Generator().manual_seed(args.seed)
    if _is_image_data(args):
        shape = tuple(model.meta["shape"]) if model is not None else None
        if shape is None:
            raise UserError("this score model does not record its image shape")
    else:
        shape = (2,)
    x = sde.prior_sample((args.n, *shape), g)
    kwargs: dict = {"final_denoise": not args.no_final_denoise, "generator": g}
    if args.sampler.startswith("predict_project"):
        from geoflow.cli_projection import resolve_projection

        target = model if model is not None else load_density(args.density)
        proj, strength = resolve_projection(
            args.projection, args.strength, target, sde, args.projection_file, sampler=args.sampler
        )
        kwargs["strength"] = strength
        if proj is not None:  # the Langevin variant takes no projection network
            kwargs["project"] = proj
        print(f"projection: {args.projection or 'default'}, strength {strength}")
    print(
        f"sampler {args.sampler}, N={args.steps} steps, {spacing} time grid from t={float(ts[0]):g} "
        f"to t={float(ts[-1]):g}, NFE={info.nfe(args.steps, not args.no_final_denoise)}, "
        f"score={score_name}, final denoise {'off' if args.no_final_denoise else 'on'}"
    )
    out = sample(args.sampler, score_fn, sde, x, ts, **kwargs).cpu().numpy()
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, out.astype(np.float32))
    elif path.suffix == ".csv":
        if out.ndim != 2:
            raise UserError("CSV output is for 2-D samples; use .npy for images")
        np.savetxt(path, out, delimiter=",", header="x,y", comments="", fmt="%.6f")
    else:
        raise UserError(f"--out must end in .npy or .csv, got {path.name!r}")
    if _is_image_data(args):
        png = path.with_suffix(".png")
        from geoflow.export import save_image_grid  # here: plotly loads only for image output

        save_image_grid(torch.from_numpy(out[:64]), png)
        print(f"wrote {png}")
    print(f"wrote {path} {out.shape}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run a benchmark script from benchmarks/ (each writes its section of RESULTS.md)."""
    suites = BENCH_SUITES if args.suite == "all" else (args.suite,)
    for suite in suites:
        script = BENCH_DIR / f"{suite}.py"
        if not script.exists():
            raise UserError(f"benchmark {suite!r} is missing ({script})")
        text = script.read_text()
        argv = [str(script)]
        # pass only the options a script defines (not every benchmark has a quick mode or --data)
        if args.quick and '"--quick"' in text:
            argv.append("--quick")
        if args.data and '"--data"' in text:
            argv += ["--data", args.data]
        print(f"== benchmark {suite}: {' '.join(argv)}")
        old = sys.argv
        try:
            sys.argv = argv
            runpy.run_path(str(script), run_name="__main__")
        finally:
            sys.argv = old
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Train the feature classifier of an image set (for the Frechet-distance metric)."""
    _threads()
    update, close = _progress_bar(args.steps, "classifier")
    try:
        model, summary = train_classifier(
            args.data, steps=args.steps, seed=args.seed, device=args.device, progress=update
        )
    finally:
        close()
    save_model(model, args.out, extra={"train": summary})
    print(f"wrote {args.out} ({summary})")
    return 0


# --------------------------------------------------------------------------- parser
def _add_source(p: argparse.ArgumentParser, required: bool = True) -> None:
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument(
        "--density", help=f"a preset ({', '.join(DENSITY_NAMES)}), a .json mixture spec or a .csv"
    )
    src.add_argument("--data", help="an image set (digits, shapes)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree (plugins add flow and train-projection)."""
    p = argparse.ArgumentParser(prog="geoflow", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("densities", help="list the named densities").set_defaults(fn=cmd_densities)
    sub.add_parser("samplers", help="list the samplers").set_defaults(fn=cmd_samplers)

    t = sub.add_parser("train", help="train a score model")
    _add_source(t)
    t.add_argument("--sde", choices=SDE_NAMES, default="vp")
    t.add_argument("--steps", type=int, default=6000)
    t.add_argument("--batch-size", type=int, default=512)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--width", type=int, default=128, help="MLP width (2-D)")
    t.add_argument("--depth", type=int, default=3, help="MLP hidden layers (2-D)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--out", required=True, help="output .safetensors")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("sample", help="draw samples with a sampler")
    _add_source(s)
    s.add_argument("--sde", choices=SDE_NAMES, default="vp")
    s.add_argument("--sampler", default="euler_maruyama", help="see `geoflow samplers`")
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--spacing", choices=SPACINGS, default=None, help="time grid (default: the sampler's)")
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--score", default=None, help="exact | PRETRAINED_NAME | FILE.safetensors")
    s.add_argument("--no-final-denoise", action="store_true", help="keep the last step's noise")
    s.add_argument("--projection", default=None, help="predict-project: learned | tweedie | exact | ...")
    s.add_argument("--projection-file", default=None, help="a projection network .safetensors")
    s.add_argument("--strength", type=float, default=None, help="projection strength dmu")
    s.add_argument("--out", required=True, help="FILE.npy or FILE.csv")
    s.set_defaults(fn=cmd_sample)

    b = sub.add_parser("bench", help="run a benchmark (writes benchmarks/RESULTS.md)")
    b.add_argument("--suite", choices=(*BENCH_SUITES, "all"), default="samplers")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--data", default=None, help="restrict to one data set where supported")
    b.set_defaults(fn=cmd_bench)

    c = sub.add_parser("train-classifier", help="train an image set's feature classifier")
    c.add_argument("--data", required=True)
    c.add_argument("--steps", type=int, default=3000)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="cpu")
    c.add_argument("--out", required=True)
    c.set_defaults(fn=cmd_train_classifier)

    for mod in PLUGINS:
        try:
            importlib.import_module(mod).register(sub)
        except ImportError:
            pass
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geoflow`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, CheckpointError, SamplerDiverged, FileNotFoundError, json.JSONDecodeError) as e:
        print(f"geoflow {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
