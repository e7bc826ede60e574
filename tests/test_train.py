"""Training: a short 2-D run learns (DSM loss and distance to the exact score fall), progress
reporting, stopping, determinism and configuration errors."""

from __future__ import annotations

import pytest
import torch

from geoflow.densities import get_density
from geoflow.sde import VPSDE, append_dims
from geoflow.train import TrainConfig, data_fn_from_tensor, dsm_loss, make_score_model_2d, train_score


def _setup(seed: int = 0):
    mix = get_density("asymmetric")
    data = mix.sample(4000, generator=torch.Generator().manual_seed(seed))
    with torch.random.fork_rng():  # a fixed network init without touching the global RNG
        torch.manual_seed(seed)
        model = make_score_model_2d(VPSDE(), data_std=float(data.std()), width=64, depth=2)
    return mix, data, model


def _eval_loss(model, data) -> float:
    """DSM loss on a fixed batch of 4000 (same times and noise before and after training)."""
    with torch.no_grad():
        return float(dsm_loss(model, data, torch.Generator().manual_seed(123)))


def _eps_error(model, mix, sde) -> float:
    """Mean squared error of the predicted noise against the exact one, sigma * exact score."""
    g = torch.Generator().manual_seed(7)
    x0 = mix.sample(2000, generator=g)
    t = 0.05 + 0.9 * torch.rand(2000, generator=g, dtype=torch.float64)
    xt = sde.marginal_sample(x0, t, generator=g)
    s = append_dims(sde.sigma(t).float(), 2)
    with torch.no_grad():
        return float(((model.score(xt, t) - mix.score(xt, t, sde)) * s).pow(2).sum(1).mean())


def test_short_training_run_learns_and_reports_progress():
    mix, data, model = _setup()
    before, err_before = _eval_loss(model, data), _eps_error(model, mix, model.sde)
    calls: list[tuple[int, int, float]] = []
    cfg = TrainConfig(steps=250, batch_size=128, lr=3e-3, seed=1)
    out = train_score(model, data_fn_from_tensor(data), cfg, progress=lambda *a: calls.append(a))
    after, err_after = _eval_loss(model, data), _eps_error(model, mix, model.sde)
    assert out["steps"] == 250 and out["stopped"] is False
    assert after < 0.8 * before, (before, after)
    assert err_after < 0.5 * err_before, (err_before, err_after)
    # progress every 50 steps and at the end, with the total and a finite running loss
    assert [c[0] for c in calls] == [*range(50, 251, 50)]
    assert all(c[1] == 250 and c[2] == c[2] and c[2] > 0 for c in calls)
    assert out["loss"] == pytest.approx(calls[-1][2])
    assert not model.training


def test_should_stop_stops_early_and_says_so():
    _, data, model = _setup()
    state = {"n": 0}

    def stop() -> bool:
        state["n"] += 1
        return state["n"] > 20

    out = train_score(
        model, data_fn_from_tensor(data), TrainConfig(steps=500, batch_size=64), should_stop=stop
    )
    assert out["stopped"] is True and out["steps"] == 20
    assert not model.training


def test_training_is_deterministic_given_seed_and_init():
    weights = []
    for _ in range(2):
        _, data, model = _setup(seed=3)
        train_score(model, data_fn_from_tensor(data), TrainConfig(steps=30, batch_size=64, seed=5))
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_diverging_loss_raises_naming_the_step():
    _, data, model = _setup()
    bad = data.clone()
    bad[:] = float("nan")
    with pytest.raises(RuntimeError, match="diverged at step 1"):
        train_score(model, data_fn_from_tensor(bad), TrainConfig(steps=10, batch_size=8))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 0},
        {"steps": 10**7},
        {"steps": 2.5},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": -1e-3},
        {"ema": 1.0},
        {"ema": -0.1},
    ],
)
def test_bad_train_config(kwargs):
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)
