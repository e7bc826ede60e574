"""Train and ship the pretrained 2-D VP score models, one manifest entry each.

Usage: ``python scripts/ship_2d.py [NAME ...] [--steps S]``. For every density it runs the exact
CLI command recorded in the manifest, then measures quality with Euler-Maruyama at N = 1000
(final denoising on, n = 10000, seed 0): KL(q || p) (k-NN) for mixtures and sliced W2 for all,
each beside its floor (the same number for an independent true sample of the same size).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from geoflow.checkpoints import PRETRAINED_DIR, load_model, sha256, write_manifest_entry
from geoflow.cli import main as cli_main
from geoflow.densities import DENSITY_NAMES, GaussianMixture, get_density
from geoflow.metrics import kl_knn, sliced_w2
from geoflow.samplers import sample

N_EVAL = 10_000


def evaluate(name: str, path: Path) -> tuple[dict, dict]:
    """Quality of a shipped model and the floors, as manifest dicts."""
    dens = get_density(name)
    model = load_model(path, expect_kind="score")
    sde = model.sde
    g = torch.Generator().manual_seed(0)
    x = sde.prior_sample((N_EVAL, 2), g)
    y = sample("euler_maruyama", model.score_fn(), sde, x, sde.time_grid(1000), generator=g)
    ref = dens.sample(N_EVAL, torch.Generator().manual_seed(1))
    ref2 = dens.sample(N_EVAL, torch.Generator().manual_seed(2))
    quality = {"sampler": "euler_maruyama N=1000 (final denoise), n=10000, seed 0"}
    floor = {}
    quality["sliced_w2"] = round(sliced_w2(y, ref), 5)
    floor["sliced_w2"] = round(sliced_w2(ref2, ref), 5)
    if isinstance(dens, GaussianMixture):
        quality["kl"] = round(kl_knn(y, dens.log_prob), 5)
        floor["kl"] = round(kl_knn(ref2, dens.log_prob), 5)
        g = torch.Generator().manual_seed(0)  # same initial noise and Brownian path
        x = sde.prior_sample((N_EVAL, 2), g)
        ye = sample("euler_maruyama", dens.score_fn(sde), sde, x, sde.time_grid(1000), generator=g)
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("names", nargs="*", default=list(DENSITY_NAMES))
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--evaluate-only", action="store_true", help="re-measure shipped files")
    p.add_argument("--no-evaluate", action="store_true", help="skip measuring; run --evaluate-only later")
    args = p.parse_args()
    torch.set_num_threads(1)
    for name in args.names:
        ship(name, args.steps, args.evaluate_only, measure=not args.no_evaluate)


if __name__ == "__main__":
    sys.exit(main())
