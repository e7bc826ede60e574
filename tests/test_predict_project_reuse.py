"""predict_project_reuse: the training-free predict-project step at 1 NFE per step.

Oracles: Euler-Maruyama (the sampler at strength 0, step for step), the Tweedie projection of
``geoflow.projection`` (one noiseless step by hand), and the callback's NFE count against the
registry.
"""

from __future__ import annotations

import math

import pytest
import torch
from pp_helpers import assert_zero_strength_is_euler_maruyama

from geoflow.densities import get_density
from geoflow.predict_project import DEFAULT_STRENGTHS, sample_predict_project_reuse
from geoflow.projection import TweedieProjection
from geoflow.registry import SAMPLERS, get_sampler, sample
from geoflow.score import batch_time
from geoflow.sde import VESDE, VPSDE, paper_beta

SDE_ = VPSDE()
NAME = "predict_project_reuse"


def _counting(score_fn):
    calls: list[float] = []

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(float(t[0]))
        return score_fn(x, t)

    return fn, calls


def test_registry_entry():
    info = get_sampler(NAME)
    assert info.family == "predict_project" and info.stochastic and not info.takes_projection
    assert info.default_strength == DEFAULT_STRENGTHS[NAME] == 1.0
    assert (info.nfe_per_step, info.final_nfe, info.startup_nfe) == (1, 1, 1)
    # one more than Euler-Maruyama, half of the two-NFE predict-project at the same N
    assert info.nfe(10) == SAMPLERS["euler_maruyama"].nfe(10) + 1 == 11
    assert SAMPLERS["predict_project"].nfe(10) == 19


@pytest.mark.parametrize("final_denoise", [True, False], ids=["denoise", "no_denoise"])
@pytest.mark.parametrize("n_steps", [1, 2, 7])
def test_nfe_count_matches_the_callback_and_the_score_calls(n_steps, final_denoise):
    sf, calls = _counting(get_density("three_component").score_fn(SDE_))
    ts = SDE_.time_grid(n_steps)
    x = SDE_.prior_sample((50, 2), torch.Generator().manual_seed(0))
    steps: list[dict] = []
    sample(NAME, sf, SDE_, x, ts, final_denoise=final_denoise, callback=steps.append)
    expected = get_sampler(NAME).nfe(n_steps, final_denoise)
    assert expected == n_steps + 1
    assert len(calls) == steps[-1]["nfe"] == expected
    # after the first step (2 NFE: its predict and its projection) one per step
    assert [d["nfe"] for d in steps] == list(range(2, n_steps + 2))


@pytest.mark.parametrize("final_denoise", [True, False], ids=["denoise", "no_denoise"])
def test_zero_strength_is_euler_maruyama_step_for_step(final_denoise):
    sf = get_density("three_component").score_fn(SDE_)
    out_em, out_pp, ts = assert_zero_strength_is_euler_maruyama(
        sample_predict_project_reuse, sf, SDE_, final_denoise
    )
    if not final_denoise:
        # the paper adds no noise after its last step; Euler-Maruyama does: they differ by exactly that
        gap = (out_em - out_pp).std().item()
        expected = math.sqrt(2 * float(paper_beta(SDE_, ts[-2])) * float(ts[-2] - ts[-1]))
        assert 0.8 * expected < gap < 1.2 * expected


def test_one_noiseless_step_is_predict_then_tweedie_projection():
    """N = 1 without the final denoising step has no noise: x = x_pred + sqrt(b) dmu dt T(x_pred)."""
    sf = get_density("three_component").score_fn(SDE_)
    x = SDE_.prior_sample((64, 2), torch.Generator().manual_seed(1)).double()
    ts = SDE_.time_grid(1)
    t, t1 = float(ts[0]), float(ts[1])
    dmu = 2.5
    out = sample_predict_project_reuse(sf, SDE_, x, ts, strength=dmu, final_denoise=False)
    b, dt = float(paper_beta(SDE_, t)), t - t1
    x_pred = x - (SDE_.drift(x, t) - 2 * b * sf(x, batch_time(t, x))) * dt
    T = TweedieProjection(sf, SDE_)(x_pred, batch_time(t, x), batch_time(t1, x))
    torch.testing.assert_close(out, x_pred + math.sqrt(b) * dmu * dt * T, rtol=1e-12, atol=1e-12)


def test_projection_acts_and_differs_from_the_two_nfe_step():
    sf = get_density("three_component").score_fn(SDE_)
    x = SDE_.prior_sample((200, 2), torch.Generator().manual_seed(3))
    ts = SDE_.time_grid(10)
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    zero = sample_predict_project_reuse(sf, SDE_, x, ts, strength=0.0, generator=g())
    one = sample_predict_project_reuse(sf, SDE_, x, ts, generator=g())
    paper = sample(NAME.removesuffix("_reuse"), sf, SDE_, x, ts, generator=g())
    assert not torch.allclose(zero, one) and not torch.allclose(one, paper)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=lambda s: s.name)
@pytest.mark.parametrize("shape", [(16, 2), (3, 1, 8, 8)], ids=["2d", "image"])
def test_deterministic_under_a_fixed_generator(sde, shape):
    def sf(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # data N(0, 0.25 I), any shape
        a, s = sde.alpha(t), sde.sigma(t)
        return -x / (a * a * 0.25 + s * s).to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))

    x = sde.prior_sample(shape, torch.Generator().manual_seed(0))
    ts = sde.time_grid(6)
    a = sample(NAME, sf, sde, x, ts, generator=torch.Generator().manual_seed(2))
    b = sample(NAME, sf, sde, x, ts, generator=torch.Generator().manual_seed(2))
    c = sample(NAME, sf, sde, x, ts, generator=torch.Generator().manual_seed(3))
    assert a.shape == shape and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_arguments():
    sf = get_density("three_component").score_fn(SDE_)
    x = SDE_.prior_sample((4, 2), torch.Generator().manual_seed(0))
    ts = SDE_.time_grid(3)
    with pytest.raises(ValueError, match="takes no projection"):
        sample_predict_project_reuse(sf, SDE_, x, ts, project=TweedieProjection(sf, SDE_))
    with pytest.raises(ValueError, match="takes no projection T"):
        sample(NAME, sf, SDE_, x, ts, project=TweedieProjection(sf, SDE_))
    with pytest.raises(ValueError, match=">= 0"):
        sample_predict_project_reuse(sf, SDE_, x, ts, strength=-1.0)
