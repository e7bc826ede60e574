"""Train and ship the pretrained 2-D VP score models, one manifest entry each.

Usage: ``python scripts/ship_2d.py [NAME ...] [--steps S] [--projection [--proj-steps S]]``.
For every density it runs the exact
CLI command recorded in the manifest, then measures quality with Euler-Maruyama at N = 1000
(final denoising on, n = 10000, seed 0, through ``geoflow.run.run`` from the prior): KL(q || p)
(k-NN) for mixtures and sliced W2 for all, each beside its floor (the same number for an independent
true sample of the same size), and for mixtures the exact score's KL with the same noise.

``--projection`` ships ``<name>-vp-proj`` instead: ``geoflow train-projection`` (random step sizes,
the command recorded in the manifest) for the shipped score model, measured at N = 20 (registry
default strength, seed 0): Euler-Maruyama, the paper's step with the learned T and with the
training-free Tweedie T (this replaces the old ``benchmarks/projection.py --ship``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from geoflow.checkpoints import PRETRAINED_DIR, sha256, write_manifest_entry
from geoflow.cli import main as cli_main
from geoflow.densities import DENSITY_NAMES, GaussianMixture, get_density
from geoflow.metrics import kl_knn, sliced_w2
from geoflow.run import RunSpec, run

N_EVAL = 10_000


def _em1000(name: str, score: str) -> torch.Tensor:
    """Euler-Maruyama at N = 1000 from the prior, seed 0 (the same x_T and Brownian path for any score)."""
    spec = RunSpec(
        data=name,
        score=score,
        sampler="euler_maruyama",
        steps=1000,
        n=N_EVAL,
        seed=0,
        start="prior",
        record=0,
    )
    traj = run(spec)
    if traj.error:
        raise SystemExit(f"{name}: Euler-Maruyama diverged with {score}: {traj.error}")
    return torch.from_numpy(traj.final)


def evaluate(name: str, path: Path) -> tuple[dict, dict]:
    """Quality of a shipped model and the floors, as manifest dicts."""
    dens = get_density(name)
    y = _em1000(name, str(path))
    ref = dens.sample(N_EVAL, torch.Generator().manual_seed(1))
    ref2 = dens.sample(N_EVAL, torch.Generator().manual_seed(2))
    quality = {
        "sampler": "euler_maruyama N=1000 (final denoise), n=10000, seed 0, geoflow.run from the prior"
    }
    floor = {}
    quality["sliced_w2"] = round(sliced_w2(y, ref), 5)
    floor["sliced_w2"] = round(sliced_w2(ref2, ref), 5)
    if isinstance(dens, GaussianMixture):
        quality["kl"] = round(kl_knn(y, dens.log_prob), 5)
        floor["kl"] = round(kl_knn(ref2, dens.log_prob), 5)
        ye = _em1000(name, "exact")  # same initial noise and Brownian path
        quality["kl_exact_score_same_sampler"] = round(kl_knn(ye, dens.log_prob), 5)
    return quality, floor


def ship(name: str, steps: int, evaluate_only: bool = False, measure: bool = True) -> None:
    """Train (unless ``evaluate_only``), evaluate (if ``measure``), write the manifest entry ``<name>-vp``."""
    out = PRETRAINED_DIR / f"{name}-vp.safetensors"
    argv = [
        "train",
        "--density",
        name,
        "--sde",
        "vp",
        "--steps",
        str(steps),
        "--seed",
        "0",
        "--out",
        str(out),
    ]
    t0 = time.perf_counter()
    if not evaluate_only and cli_main(argv) != 0:
        raise SystemExit(f"training {name} failed")
    secs = time.perf_counter() - t0
    quality, floor = evaluate(name, out) if measure else ({"status": "not measured yet"}, {})
    if not evaluate_only:
        quality["train_seconds_this_run"] = round(secs, 1)
    cmd = "geoflow " + " ".join(shlex.quote(a) for a in argv).replace(str(PRETRAINED_DIR), "pretrained")
    entry = {
        "kind": "score",
        "file": out.name,
        "sha256": sha256(out),
        "command": cmd,
        "quality": quality,
        "floor": floor,
    }
    write_manifest_entry(f"{name}-vp", entry)
    print(name, quality, floor, flush=True)


def ship_projection(name: str, steps: int, batch_size: int = 512) -> None:
    """Train ``<name>-vp-proj`` for the shipped ``<name>-vp``, measure it at N = 20, write its entry."""
    out = PRETRAINED_DIR / f"{name}-vp-proj.safetensors"
    argv = ["train-projection", "--density", name, "--score", f"{name}-vp", "--mode", "random_dt"]
    argv += ["--steps", str(steps), "--batch-size", str(batch_size), "--seed", "0", "--out", str(out)]
    t0 = time.perf_counter()
    if cli_main(argv) != 0:
        raise SystemExit(f"train-projection failed for {name}")
    secs = time.perf_counter() - t0
    cmd = "geoflow " + " ".join(shlex.quote(a) for a in argv).replace(str(PRETRAINED_DIR), "pretrained")
    entry = {"kind": "projection", "file": out.name, "sha256": sha256(out), "command": cmd}
    write_manifest_entry(f"{name}-vp-proj", {**entry, "quality": {}, "floor": {}})  # loadable for the runs
    dens = get_density(name)
    mixture = isinstance(dens, GaussianMixture)
    ref = dens.sample(N_EVAL, torch.Generator().manual_seed(1))
    ref2 = dens.sample(N_EVAL, torch.Generator().manual_seed(2))

    def q(x: torch.Tensor) -> float:
        return kl_knn(x, dens.log_prob) if mixture else sliced_w2(x, ref)

    quality: dict = {"evaluation": "N=20, registry default strength, n=10000, seed 0, final denoise on",
                     "metric": "KL" if mixture else "sliced W2", "train_seconds": round(secs, 1)}  # fmt: skip
    for label, sampler, proj in (
        ("euler_maruyama", "euler_maruyama", "auto"),
        ("predict_project_learned", "predict_project", "learned"),
        ("predict_project_tweedie", "predict_project", "tweedie"),
    ):
        spec = RunSpec(data=name, score=f"{name}-vp", sampler=sampler, steps=20, projection=proj,
                       n=N_EVAL, seed=0, start="prior", record=0)  # fmt: skip
        traj = run(spec)
        quality[label] = None if traj.error else round(q(torch.from_numpy(traj.final)), 5)
    floor = {quality["metric"]: round(kl_knn(ref2, dens.log_prob) if mixture else sliced_w2(ref2, ref), 5)}
    write_manifest_entry(f"{name}-vp-proj", {**entry, "quality": quality, "floor": floor})
    print(name, quality, floor, flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("names", nargs="*", default=list(DENSITY_NAMES))
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--evaluate-only", action="store_true", help="re-measure shipped files")
    p.add_argument("--no-evaluate", action="store_true", help="skip measuring; run --evaluate-only later")
    p.add_argument("--projection", action="store_true", help="ship <name>-vp-proj for the shipped <name>-vp")
    p.add_argument("--proj-steps", type=int, default=1500)
    args = p.parse_args()
    torch.set_num_threads(1)
    for name in args.names:
        if args.projection:
            ship_projection(name, args.proj_steps)
        else:
            ship(name, args.steps, args.evaluate_only, measure=not args.no_evaluate)


if __name__ == "__main__":
    sys.exit(main())
