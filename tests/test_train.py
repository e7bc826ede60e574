"""Training: a short 2-D run learns (DSM loss and distance to the exact score fall), progress
reporting, stopping, determinism and configuration errors; image score models and the feature classifier."""

from __future__ import annotations

import math

import pytest
import torch

from geoflow.checkpoints import load_model, save_model
from geoflow.densities import get_density
from geoflow.images import IMAGE_SETS, image_shape
from geoflow.nets import UNet
from geoflow.sde import VPSDE, append_dims
from geoflow.train import (
    TrainConfig,
    data_fn_from_tensor,
    dsm_loss,
    make_image_score_model,
    make_score_model_2d,
    train_classifier,
    train_image_score,
    train_score,
)


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


# --------------------------------------------------------------------------- image score models, classifier
def _randomize_output(net: UNet, seed: int) -> None:
    # the output conv starts at zero (eps = 0); give it weights so the tests see a real function
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = net.conv_out.weight
        w.copy_(0.1 * torch.randn(w.shape, generator=g))


@pytest.mark.parametrize("name", IMAGE_SETS)
def test_image_score_model_shapes_and_roundtrip(name, tmp_path):
    model = make_image_score_model(name, VPSDE())
    assert model.meta == {"data": name, "shape": list(image_shape(name))}
    assert isinstance(model.net, UNet)
    _randomize_output(model.net, 0)
    x = torch.randn(5, *image_shape(name), generator=torch.Generator().manual_seed(1))
    t = torch.linspace(0.01, 1.0, 5)
    s = model.score(x, t)
    assert s.shape == x.shape and bool(torch.isfinite(s).all())
    assert float(s.detach().abs().max()) > 0
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path, expect_kind="score")
    torch.testing.assert_close(loaded.score(x, t), s)


def test_train_image_score_runs_and_stops():
    calls = []
    model, summary = train_image_score(
        "digits",
        VPSDE(),
        TrainConfig(steps=3, batch_size=8, seed=0),
        should_stop=lambda: len(calls.append(0) or calls) > 2,
    )
    assert summary["stopped"] and summary["steps"] == 2
    assert math.isfinite(summary["loss"]) and not model.training
    assert next(model.parameters()).device.type == "cpu"


def test_training_is_deterministic_under_a_seed():
    cfg = TrainConfig(steps=2, batch_size=8, seed=3)
    state = torch.get_rng_state()
    m1, _ = train_image_score("digits", VPSDE(), cfg)
    assert torch.equal(state, torch.get_rng_state())  # the init seed does not leak into the global RNG
    m2, _ = train_image_score("digits", VPSDE(), cfg)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k
    c1, s1 = train_classifier("digits", steps=2, seed=3, batch_size=8)
    c2, s2 = train_classifier("digits", steps=2, seed=3, batch_size=8)
    assert s1 == s2 and 0.0 <= s1["test_accuracy"] <= 1.0
    for v1, v2 in zip(c1.state_dict().values(), c2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2)


def test_image_training_bad_names_raise_listing_valid_choices():
    with pytest.raises(ValueError, match="digits, shapes"):
        make_image_score_model("cifar", VPSDE())
    with pytest.raises(ValueError, match="digits, shapes"):
        train_classifier("mnist")
