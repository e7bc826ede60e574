"""A torchrun worker for tests/test_distributed.py (not a test module itself).

    torchrun --standalone --nproc-per-node 2 tests/dist_worker.py MODE OUT_DIR

MODE ``train``: a small 2-D score model, ``STEPS`` steps at per-rank batch ``BATCH`` on
eight_gaussians through :func:`geoflow.train.train_score`; every rank writes its final weights to
``OUT_DIR/rank<r>.safetensors``. MODE ``fail``: the same, but rank 1's data turns NaN at step 3,
so that rank raises (the diverged-loss check) while rank 0 waits for it in the gradient all-reduce.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from geoflow import distributed
from geoflow.densities import get_density
from geoflow.sde import VPSDE
from geoflow.train import TrainConfig, make_score_model_2d, train_score

STEPS, BATCH, SEED = 5, 16, 3


def model_and_data():
    """The model and data both the workers and the test's 1-process reference use."""
    dens = get_density("eight_gaussians")
    model = make_score_model_2d(VPSDE(), data_std=2.0, width=32, depth=2, seed=7)
    return model, (lambda n, g: dens.sample(n, g))


def main(mode: str, out: Path) -> None:
    torch.set_num_threads(1)
    ctx = distributed.from_env("cpu")
    assert ctx is not None and ctx.world_size == 2, "run me under torchrun with 2 processes"
    model, data = model_and_data()
    calls = [0]

    def maybe_failing(n: int, g: torch.Generator) -> torch.Tensor:
        calls[0] += 1
        x = data(n, g)
        return x * float("nan") if mode == "fail" and ctx.rank == 1 and calls[0] >= 3 else x

    cfg = TrainConfig(steps=STEPS if mode == "train" else 10_000, batch_size=BATCH, lr=1e-2, seed=SEED)
    summary = train_score(model, maybe_failing, cfg, ddp=ctx)
    assert summary["global_batch"] == 2 * BATCH
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{ctx.rank}.safetensors")
    )
    distributed.shutdown(ctx)
    distributed.leave(ctx, 0)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
