"""Issue-2 speed target: train a 2-D score model at the shipped settings and time it.

For each density: ``geoflow train`` (6000 steps, batch 512, seeded) timed on this machine, then
KL(q || p) of Euler-Maruyama at N = 1000 (final denoise, n = 10000, the same initial noise and
Brownian path) with the fresh model and with the exact score. Target: <= 30 s of training and a KL
gap <= 0.01. Writes the ``training`` section of RESULTS.md.

Usage: ``python benchmarks/training.py [--threads 1] [--steps 6000]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import md_table, write_section  # noqa: E402
from geoflow.densities import get_density  # noqa: E402
from geoflow.metrics import kl_knn  # noqa: E402
from geoflow.samplers import sample  # noqa: E402
from geoflow.sde import VPSDE  # noqa: E402
from geoflow.train import TrainConfig, make_score_model_2d, train_score  # noqa: E402

DENSITIES = ("eight_gaussians", "asymmetric")


def em_kl(score_fn, dens, sde: VPSDE, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    x = sde.prior_sample((10_000, 2), g)
    y = sample("euler_maruyama", score_fn, sde, x, sde.time_grid(1000), generator=g)
    return kl_knn(y, dens.log_prob)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--seeds", type=int, default=2, help="sampling seeds for the KL")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sde = VPSDE()
    rows = []
    for name in DENSITIES:
        dens = get_density(name)
        data_std = float(dens.sample(10_000, torch.Generator().manual_seed(10_000)).std())
        model = make_score_model_2d(sde, data_std, seed=0)
        t0 = time.perf_counter()
        train_score(model, lambda n, g, d=dens: d.sample(n, g), TrainConfig(steps=args.steps))
        secs = time.perf_counter() - t0
        kl_m = [em_kl(model.score_fn(), dens, sde, s) for s in range(args.seeds)]
        kl_e = [em_kl(dens.score_fn(sde), dens, sde, s) for s in range(args.seeds)]
        km, ke = sum(kl_m) / len(kl_m), sum(kl_e) / len(kl_e)
        rows.append(
            [
                name,
                round(secs, 1),
                "yes" if secs <= 30 else "NO",
                km,
                ke,
                km - ke,
                "yes" if km - ke <= 0.01 else "NO",
            ]
        )
        print(rows[-1], flush=True)
    body = (
        f"{args.steps} steps, batch 512, MLP 3x128, {args.threads} torch thread(s); KL is the mean over "
        f"{args.seeds} sampling seeds (n = 10000, EM N = 1000, final denoise).\n\n"
        + md_table(
            ["density", "train s", "<= 30 s", "KL model", "KL exact score", "gap", "gap <= 0.01"], rows
        )
    )
    cmd = f"python benchmarks/training.py --threads {args.threads} --steps {args.steps} --seeds {args.seeds}"
    write_section("training", "2-D training speed target (issue 2)", cmd, body)
    print(body)


if __name__ == "__main__":
    main()
