"""Where an image score model fails: the reverse SDE started from held-out images noised to t0.

    .venv/bin/python -m benchmarks.score_error [--data shapes] [--model shapes-vp] [--t0 0.1,0.2,0.35,0.5,0.7]

A sampler started from the prior mixes two errors: the score's error at every noise level and the
discretisation. Starting instead from ``x_t0 ~ p_t0`` exactly (held-out images pushed through the
forward SDE, ``x_t0 = alpha(t0) x_0 + sigma(t0) z``) and running Euler-Maruyama from t0 down to
t_min isolates the score on ``[t_min, t0]``: with the true score the result is a sample of the data
at every N, so its Fréchet distance (classifier features, n = 1000 against the held-out split) would
stay at the floor. Each t0 runs at N = 20 and at a fine N (400 t0 steps, as dense in t as EM at
N = 400 from the prior); if the fine N is the worse one, the error is the score's, not the steps'.
The class histogram (the shipped classifier's argmax) shows which kinds the score turns into which.
Writes the ``score_error`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._results import md_table, write_section  # noqa: E402
from geoflow.checkpoints import load_pretrained  # noqa: E402
from geoflow.images import class_names, load_image_set  # noqa: E402
from geoflow.metrics import image_quality  # noqa: E402
from geoflow.samplers import sample_euler_maruyama  # noqa: E402

N_SAMPLES = 1000


def from_noised(model, x0: torch.Tensor, t0: float, steps: int, seed: int) -> torch.Tensor:
    """EM from ``x_t0 = alpha(t0) x0 + sigma(t0) z`` down to t_min in ``steps`` uniform steps.

    Args:
        model: a ``ScoreModel`` (its SDE is used).
        x0: (n, C, H, W) held-out images.
        t0: the start time in (t_min, T].
        steps: N >= 1.
        seed: fixes z and the Brownian path (the same for every N at one t0).

    Returns:
        (n, C, H, W) samples after the final denoising step.
    """
    sde = model.sde
    g = torch.Generator().manual_seed(seed)
    x = sde.marginal_sample(x0, torch.tensor(t0), generator=g)
    ts = torch.linspace(t0, sde.t_min, steps + 1, dtype=torch.float64)
    return sample_euler_maruyama(model.score_fn(), sde, x, ts, generator=g)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--model", default=None, help="pretrained name (default: <data>-vp)")
    ap.add_argument("--t0", default="0.1,0.2,0.35,0.5,0.7")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    name = args.model or f"{args.data}-vp"
    model = load_pretrained(name)
    clf = load_pretrained(f"{args.data}-classifier")
    test, _ = load_image_set(args.data, "test")
    x0 = test[:N_SAMPLES]
    kinds = class_names(args.data)
    held = image_quality(x0, args.data, clf)
    rows = [["held-out images (no noise)", "", "", held["frechet"], *held["class_histogram"], ""]]
    for t0 in (float(v) for v in args.t0.split(",")):
        sde = model.sde
        snr = float(sde.sigma(torch.tensor(t0)) / sde.alpha(torch.tensor(t0)))
        for steps in (20, max(20, round(400 * t0))):
            t = time.perf_counter()
            q = image_quality(from_noised(model, x0, t0, steps, args.seed), args.data, clf)
            secs = time.perf_counter() - t
            rows.append([f"t0 = {t0:g}", f"{snr:.3g}", steps, q["frechet"], *q["class_histogram"], secs])
            print(rows[-1], flush=True)
    head = ["start", "sigma/alpha at t0", "N", "Fréchet", *kinds, "s"]
    body = (
        f"Model `{name}`, {N_SAMPLES} held-out {args.data} images; floor (train vs test) "
        f"{held['floor']:.3g}. Columns after the Fréchet distance: the fraction of samples the shipped "
        "classifier assigns to each kind.\n\n" + md_table(head, rows)
    )
    if not args.no_write:
        cmd = "python -m benchmarks.score_error " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section("score_error", f"Where the {args.data} score fails (issue 11)", cmd.strip(), body)
    print(body)


if __name__ == "__main__":
    main()
