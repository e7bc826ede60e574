"""Shared checks of the predict-project tests (test_projection.py, test_predict_project_reuse.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from geoflow.samplers import sample_euler_maruyama
from geoflow.sde import SDE


def assert_zero_strength_is_euler_maruyama(
    pp_sampler: Callable[..., torch.Tensor],
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde: SDE,
    final_denoise: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run Euler-Maruyama and ``pp_sampler`` at strength 0 from one start with one seed (12 steps).

    Asserts that every recorded step agrees exactly (all 12 with the final denoising step, else the
    first 11) and, with ``final_denoise``, the outputs too.

    Returns:
        the Euler-Maruyama output, the predict-project output and the time grid.
    """
    x = sde.prior_sample((200, 2), torch.Generator().manual_seed(3))
    ts = sde.time_grid(12)
    em, pp = [], []
    out_em = sample_euler_maruyama(
        score_fn,
        sde,
        x,
        ts,
        final_denoise=final_denoise,
        callback=lambda d: em.append(d["x"]),
        generator=torch.Generator().manual_seed(9),
    )
    out_pp = pp_sampler(
        score_fn,
        sde,
        x,
        ts,
        strength=0.0,
        final_denoise=final_denoise,
        callback=lambda d: pp.append(d["x"]),
        generator=torch.Generator().manual_seed(9),
    )
    assert len(em) == len(pp) == 12
    last = 12 if final_denoise else 11
    for a, b in zip(em[:last], pp[:last], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    if final_denoise:
        torch.testing.assert_close(out_em, out_pp, rtol=0, atol=0)
    return out_em, out_pp, ts
