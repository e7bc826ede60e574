"""SDEs: closed forms of alpha, sigma and int beta, marginals against simulated forward paths, grids.

Oracles: numerical quadrature of beta, finite differences of sigma^2, and an Euler-Maruyama
simulation of the forward SDE (method.md eq. 1) from Gaussian data, whose mean and variance must
follow ``alpha(t) mu`` and ``alpha(t)^2 v0 + sigma(t)^2``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from geoflow.sde import SPACINGS, VESDE, VPSDE, append_dims, make_sde, sde_from_config

SDES = [VPSDE(), VESDE(), VPSDE(beta_min=0.1, beta_max=20.0), VESDE(sigma_min=0.02, sigma_max=5.0)]
TIMES = [0.0, 1e-3, 0.1, 0.37, 0.8, 1.0]


def test_vp_closed_forms_against_quadrature():
    sde = VPSDE(beta_min=0.1, beta_max=12.0)
    for t in TIMES:
        beta = float(sde.beta(t))
        assert beta == pytest.approx(0.1 + 11.9 * t)
        integral, _ = quad(lambda s: float(sde.beta(s)), 0.0, t)
        assert float(sde.int_beta(t)) == pytest.approx(integral, rel=1e-10, abs=1e-14)
        a, s = float(sde.alpha(t)), float(sde.sigma(t))
        assert a == pytest.approx(math.exp(-integral), rel=1e-10)
        assert a * a + s * s == pytest.approx(1.0, rel=1e-12)
        assert float(sde.diffusion(t)) ** 2 == pytest.approx(2 * beta, rel=1e-12)
    x = torch.randn(4, 3)
    assert torch.allclose(sde.drift(x, 0.5), -float(sde.beta(0.5)) * x)
    # at T the data is (almost) forgotten with the default schedule
    assert VPSDE().prior_mismatch() < 0.01


def test_ve_closed_forms():
    sde = VESDE(sigma_min=0.02, sigma_max=5.0)
    assert float(sde.sigma(0.0)) == pytest.approx(0.02)
    assert float(sde.sigma(1.0)) == pytest.approx(5.0)
    ts = torch.tensor(TIMES, dtype=torch.float64)
    # geometric: log sigma linear in t
    logs = torch.log(sde.sigma(ts))
    assert torch.allclose(logs, math.log(0.02) + ts * math.log(5.0 / 0.02), atol=1e-12)
    assert torch.equal(sde.alpha(ts), torch.ones_like(ts))
    # g^2 = d sigma^2 / dt
    h = 1e-6
    for t in (0.1, 0.5, 0.9):
        fd = (float(sde.sigma(t + h)) ** 2 - float(sde.sigma(t - h)) ** 2) / (2 * h)
        assert float(sde.diffusion(t)) ** 2 == pytest.approx(fd, rel=1e-6)
    x = torch.randn(4, 2)
    assert torch.equal(sde.drift(x, 0.3), torch.zeros_like(x))


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=lambda s: s.name)
def test_marginal_matches_simulated_forward_sde(sde):
    g = torch.Generator().manual_seed(0)
    n = 10000
    mu = torch.tensor([1.5, -0.8], dtype=torch.float64)
    v0 = torch.tensor([0.3, 0.05], dtype=torch.float64)
    x = mu + v0.sqrt() * torch.randn(n, 2, generator=g, dtype=torch.float64)
    if sde.name == "ve":
        # NCSN's reading: the data enters already perturbed at sigma_min (sigma(0) = sigma_min)
        x = x + sde.sigma_min * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t_prev = 0.0
    for t in (0.05, 0.3, 1.0):
        x = _simulate_forward_from(sde, x, t_prev, t, g)
        t_prev = t
        a, s = float(sde.alpha(t)), float(sde.sigma(t))
        mean, var = a * mu, a * a * v0 + s * s
        se_mean = (var / n).sqrt()
        assert torch.all((x.mean(0) - mean).abs() < 5 * se_mean + 0.01 * var.sqrt()), (t, x.mean(0), mean)
        # var estimator standard error ~ var sqrt(2/n); 5 of them plus a 2% allowance for the O(dt) bias
        assert torch.all((x.var(0) - var).abs() < var * (5 * math.sqrt(2 / n) + 0.02)), (t, x.var(0), var)


def _simulate_forward_from(sde, x, t0: float, t1: float, g: torch.Generator) -> torch.Tensor:
    """Fine Euler-Maruyama from t0 to t1 (step 1e-3: its O(beta dt) variance bias is under 1%)."""
    steps = max(1, round((t1 - t0) / 1e-3))
    dt = (t1 - t0) / steps
    for k in range(steps):
        t = t0 + k * dt
        z = torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = x + sde.drift(x, t) * dt + float(sde.diffusion(t)) * math.sqrt(dt) * z
    return x


@pytest.mark.parametrize("sde", SDES, ids=lambda s: f"{s.name}-{s.T}")
def test_marginal_sample_moments(sde):
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((50000, 2), 2.0, dtype=torch.float64)
    xt = sde.marginal_sample(x0, 0.4, generator=g)
    a, s = float(sde.alpha(0.4)), float(sde.sigma(0.4))
    assert torch.allclose(xt.mean(0), torch.full((2,), 2 * a, dtype=torch.float64), atol=5 * s / 220)
    assert torch.allclose(xt.std(0), torch.full((2,), s, dtype=torch.float64), rtol=0.02)
    # per-sample times broadcast through append_dims, also for image-shaped batches
    x_img = torch.ones(3, 1, 4, 4)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    out = sde.marginal_sample(x_img, t, generator=g)
    assert out.shape == x_img.shape and out.dtype == torch.float32


@pytest.mark.parametrize("sde", SDES, ids=lambda s: f"{s.name}-{s.T}")
def test_prior_sample(sde):
    a = sde.prior_sample((20000, 2), torch.Generator().manual_seed(3))
    b = sde.prior_sample((20000, 2), torch.Generator().manual_seed(3))
    assert a.shape == (20000, 2) and a.dtype == torch.float32 and torch.equal(a, b)
    assert float(a.std()) == pytest.approx(sde.prior_std(), rel=0.02)
    assert sde.prior_sample((2, 1, 8, 8)).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("sde", SDES, ids=lambda s: f"{s.name}-{s.T}")
def test_time_grid(sde, spacing):
    for n in (1, 2, 10, 1000):
        ts = sde.time_grid(n, spacing)
        assert ts.shape == (n + 1,) and ts.dtype == torch.float64
        assert bool(torch.all(ts[1:] < ts[:-1])), (n, spacing)
        assert float(ts[0]) == pytest.approx(sde.T, abs=1e-12)
        assert float(ts[-1]) == pytest.approx(sde.t_min, abs=1e-12)
    ts = sde.time_grid(50, spacing)
    steps = -torch.diff(ts)
    if spacing == "uniform":
        assert torch.allclose(steps, steps[0].expand_as(steps), rtol=1e-9)
    elif spacing == "quadratic":
        # denser near t_min
        assert bool(torch.all(steps[1:] < steps[:-1]))
    else:
        lam = sde.log_snr(ts)
        assert torch.allclose(torch.diff(lam), torch.diff(lam)[0].expand(50), rtol=1e-6)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=lambda s: s.name)
def test_log_snr_decreases_and_inverts(sde):
    ts = torch.linspace(sde.t_min, sde.T, 200, dtype=torch.float64)
    lam = sde.log_snr(ts)
    assert bool(torch.all(lam[1:] < lam[:-1]))
    back = sde.t_from_log_snr(lam)
    assert torch.allclose(back, ts, atol=1e-9)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", None])
def test_time_grid_rejects_bad_step_counts(bad):
    with pytest.raises(ValueError, match="number of steps"):
        VPSDE().time_grid(bad)


def test_time_grid_rejects_unknown_spacing_naming_the_valid_ones():
    with pytest.raises(ValueError) as e:
        VESDE().time_grid(10, "cosine")
    assert all(s in str(e.value) for s in SPACINGS)


def test_bad_schedules_and_names():
    for kwargs in ({"beta_min": 5.0, "beta_max": 1.0}, {"beta_min": -1.0}, {"t_min": 0.0}, {"t_min": 2.0}):
        with pytest.raises(ValueError):
            VPSDE(**kwargs)
    for kwargs in ({"sigma_min": 0.0}, {"sigma_min": 2.0, "sigma_max": 1.0}):
        with pytest.raises(ValueError):
            VESDE(**kwargs)
    with pytest.raises(ValueError, match="vp, ve"):
        make_sde("subvp")
    with pytest.raises(ValueError, match="type"):
        sde_from_config({"beta_min": 0.1})


@pytest.mark.parametrize("sde", SDES, ids=lambda s: f"{s.name}-{s.T}")
def test_config_round_trip_and_frozen(sde):
    import json

    back = sde_from_config(json.loads(json.dumps(sde.config())))
    assert back == sde and type(back) is type(sde)
    assert make_sde(sde.name) == type(sde)()
    with pytest.raises(AttributeError):
        sde.T = 2.0  # type: ignore[misc]


def test_append_dims():
    v = torch.arange(3.0)
    assert append_dims(v, 4).shape == (3, 1, 1, 1)
    assert append_dims(v, 1).shape == (3,)
    assert torch.equal((append_dims(v, 3) * torch.ones(3, 2, 2))[:, 1, 1], v)
    with pytest.raises(ValueError):
        append_dims(torch.ones(2, 2), 1)
    assert np.isfinite(float(VPSDE().log_snr(1.0)))
