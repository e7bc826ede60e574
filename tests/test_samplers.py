"""Samplers: one contract over every registered sampler, recovery of a mixture with the exact score,
the shared Brownian path, divergence and input errors.

Oracles: the exact score of a Gaussian data distribution (closed form in any shape), the exact
score of the eight-Gaussians mixture (checked against ``GaussianMixture.score``), Tweedie's
formula for the final denoising step, and Brownian-motion identities for ``BrownianPath``.
"""

from __future__ import annotations

import pytest
import torch

from geoflow.densities import get_density
from geoflow.registry import SAMPLER_NAMES, SAMPLERS, STANDARD_SAMPLERS, get_sampler, sample
from geoflow.samplers import (
    BrownianPath,
    SamplerDiverged,
    sample_annealed_langevin,
    sample_ddim,
    sample_euler_maruyama,
    sample_predictor_corrector,
)
from geoflow.score import tweedie_x0
from geoflow.sde import VESDE, VPSDE, append_dims

NAMES = SAMPLER_NAMES
CORE = STANDARD_SAMPLERS
DATA_STD = 0.5


def _sde_for(name: str):
    """Annealed Langevin lives on the VE SDE (NCSN); every other sampler runs on the VP SDE."""
    return VESDE() if name == "annealed_langevin" else VPSDE()


def gaussian_score(sde, c: float = DATA_STD):
    """Exact score of data ``N(0, c^2 I)``: the marginal is ``N(0, (a^2 c^2 + s^2) I)``; any shape."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],), "samplers must pass per-sample times of shape (B,)"
        a, s = sde.alpha(t), sde.sigma(t)
        var = append_dims((a * a * c * c + s * s).to(x.dtype), x.ndim)
        return -x / var

    return fn


def _run(name: str, score_fn, sde, x, ts, **kw) -> torch.Tensor:
    return sample(name, score_fn, sde, x, ts, **kw)


def _grid(name: str, sde, n: int) -> torch.Tensor:
    return sde.time_grid(n, SAMPLERS[name].spacing)


# --------------------------------------------------------------------------- contract
def test_registry_has_the_required_samplers():
    assert set(CORE) <= set(NAMES)
    for name in NAMES:
        info = get_sampler(name)
        assert info.label and info.spacing in ("uniform", "quadratic", "logsnr")
    with pytest.raises(ValueError) as e:
        get_sampler("euler")
    assert all(n in str(e.value) for n in NAMES)


@pytest.mark.parametrize("final_denoise", [True, False], ids=["denoise", "no_denoise"])
@pytest.mark.parametrize("shape", [(16, 2), (4, 1, 8, 8)], ids=["2d", "image"])
@pytest.mark.parametrize("name", NAMES)
def test_sampler_contract(name, shape, final_denoise):
    sde = _sde_for(name)
    info = get_sampler(name)
    n_steps = 6
    ts = _grid(name, sde, n_steps)
    score = gaussian_score(sde)
    x = sde.prior_sample(shape, torch.Generator().manual_seed(0))
    x_before = x.clone()
    calls: list[dict] = []

    def cb(d: dict) -> None:
        calls.append({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in d.items()})

    out = _run(
        name,
        score,
        sde,
        x,
        ts,
        final_denoise=final_denoise,
        callback=cb,
        generator=torch.Generator().manual_seed(1),
    )
    # shape, dtype, the input noise untouched
    assert out.shape == shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert torch.equal(x, x_before)
    # one callback per step with the documented keys, times the grid's (0 after the final denoise)
    assert len(calls) == n_steps
    assert [c["i"] for c in calls] == list(range(n_steps))
    for k, c in enumerate(calls):
        assert {"i", "t", "x", "x0_hat", "nfe"} <= set(c)
        assert c["x"].shape == shape and c["x0_hat"].shape == shape
        expected_t = 0.0 if (final_denoise and k == n_steps - 1) else float(ts[k + 1])
        assert c["t"] == pytest.approx(expected_t)
    assert torch.equal(calls[-1]["x"], out)
    # NFE: non-decreasing, and the registry's count
    nfes = [c["nfe"] for c in calls]
    assert nfes == sorted(nfes) and nfes[0] >= 1
    assert nfes[-1] == info.nfe(n_steps, final_denoise)
    # determinism under a fixed generator; stochastic samplers use it, deterministic ones do not
    again = _run(
        name, score, sde, x, ts, final_denoise=final_denoise, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(again, out)
    other = _run(
        name, score, sde, x, ts, final_denoise=final_denoise, generator=torch.Generator().manual_seed(2)
    )
    if info.stochastic:
        assert not torch.equal(other, out)
    else:
        assert torch.equal(other, out)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "predictor_corrector"])
def test_final_denoise_is_tweedie_at_the_last_positive_time(name):
    """With final_denoise the output is x0_hat(x_{N-1}, t_{N-1}): no noise, no step to t_min.

    (Predictor-corrector runs its corrector on x_{N-1} first, so it is left out.)
    """
    sde = _sde_for(name)
    ts = _grid(name, sde, 5)
    score = gaussian_score(sde)
    x = sde.prior_sample((32, 2), torch.Generator().manual_seed(3))
    states: list[torch.Tensor] = []
    out = _run(name, score, sde, x, ts, callback=lambda d: states.append(d["x"].clone()))
    x_prev, t_prev = states[-2], ts[-2].expand(32)
    expected = tweedie_x0(x_prev, score(x_prev, t_prev), t_prev, sde)
    assert torch.allclose(out, expected, atol=1e-5)
    # switched off, the run goes on to t_min and differs
    off = _run(name, score, sde, x, ts, final_denoise=False)
    assert not torch.allclose(off, out)


@pytest.mark.parametrize("name", NAMES)
def test_runs_on_the_ve_sde_too(name):
    sde = VESDE()
    ts = _grid(name, sde, 100)
    x = sde.prior_sample((200, 2), torch.Generator().manual_seed(4))
    out = _run(name, gaussian_score(sde), sde, x, ts, generator=torch.Generator().manual_seed(5))
    assert out.shape == (200, 2) and torch.isfinite(out).all()
    # 100 steps from sigma = 10 land near the data's scale (0.5; one Langevin step per level is the
    # crudest, ~20% wide at N = 100)
    assert 0.35 < float(out.std()) < 0.7


# --------------------------------------------------------------------------- recovery with the exact score
def eight_gaussians_score(sde):
    """Exact score of the eight-Gaussians marginal (equal isotropic components), in closed form.

    ``p_t = sum_k (1/8) N(a m_k, v I)``, ``v = a^2 0.2^2 + s^2``: the score is
    ``(sum_k r_k a m_k - x) / v`` with responsibilities ``r = softmax(-|x - a m_k|^2 / 2v)``.
    Checked against ``GaussianMixture.score`` in :func:`test_eight_gaussians_fast_score_is_exact`;
    several times cheaper, so the N = 1000 runs stay within the suite's time budget.
    """
    mix = get_density("eight_gaussians")
    means = mix.means
    sq = (means**2).sum(1)
    var0 = float(mix.covs[0, 0, 0])

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = sde.alpha(t).to(x.dtype)[:, None]
        v = a * a * var0 + sde.sigma(t).to(x.dtype)[:, None] ** 2
        m = means.to(x.dtype)
        # -|x - a m_k|^2 / 2v up to the k-independent |x|^2 term, which softmax ignores
        r = torch.softmax((a * (x @ m.T) - 0.5 * a * a * sq.to(x.dtype)) / v, dim=1)
        return (a * (r @ m) - x) / v

    return fn


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=lambda s: s.name)
def test_eight_gaussians_fast_score_is_exact(sde):
    mix = get_density("eight_gaussians")
    g = torch.Generator().manual_seed(6)
    x = 3 * torch.randn(256, 2, generator=g, dtype=torch.float64)
    t = torch.rand(256, generator=g, dtype=torch.float64) * 0.999 + 0.001
    assert torch.allclose(eight_gaussians_score(sde)(x, t), mix.score(x, t, sde), rtol=1e-8, atol=1e-8)


def _mode_stats(samples: torch.Tensor, means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Nearest-mode weights (K,), pooled per-axis spread around the assigned mode (2,), outlier share."""
    dist = torch.cdist(samples.double(), means)
    idx = dist.argmin(1)
    weights = torch.bincount(idx, minlength=means.shape[0]).double() / samples.shape[0]
    resid = samples.double() - means[idx]
    far = float((dist.min(1).values > 1.0).double().mean())  # 5 standard deviations from every mode
    return weights, resid.pow(2).mean(0).sqrt(), far


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_exact_score_at_1000_steps_recovers_eight_gaussians(name):
    n = 2000
    sde = _sde_for(name)
    mix = get_density("eight_gaussians")
    x = sde.prior_sample((n, 2), torch.Generator().manual_seed(7))
    out = _run(
        name,
        eight_gaussians_score(sde),
        sde,
        x,
        _grid(name, sde, 1000),
        generator=torch.Generator().manual_seed(8),
    )
    w, spread, far = _mode_stats(out, mix.means)
    # weights 1/8 each: binomial standard error 0.0074 at n = 2000, tolerance about 4.5 of them
    assert torch.all((w - 0.125).abs() < 0.033), (name, w)
    # spread 0.2 per axis: standard error ~1.6%; allow 8% for the samplers' own O(1/N) bias
    assert torch.all((spread / 0.2 - 1).abs() < 0.08), (name, spread)
    assert far < 0.005, (name, far)


# --------------------------------------------------------------------------- Brownian path and noise
def _walk(path: BrownianPath, ts: torch.Tensor) -> torch.Tensor:
    return torch.stack([path.increment(float(t)) for t in ts[1:]])


def test_same_seed_same_initial_noise_whatever_the_step_count():
    sde = VPSDE()
    a = sde.prior_sample((64, 2), torch.Generator().manual_seed(9))
    b = sde.prior_sample((64, 2), torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    # and the samplers derive their Brownian path from the generator the same way for any N
    p10 = BrownianPath((64, 2), 1.0, 1e-3, torch.Generator().manual_seed(9))
    p1000 = BrownianPath((64, 2), 1.0, 1e-3, torch.Generator().manual_seed(9))
    inc10 = _walk(p10, sde.time_grid(10))
    inc1000 = _walk(p1000, sde.time_grid(1000))
    # N = 1000 on a uniform grid is the fine grid itself: sums of 100 fine increments are the coarse ones
    assert torch.allclose(inc1000.reshape(10, 100, 64, 2).sum(1), inc10, atol=1e-5)
    assert torch.allclose(inc1000.sum(0), inc10.sum(0), atol=1e-5)


def test_brownian_path_nested_aligned_grids():
    sde = VPSDE()
    incs = {}
    for n in (10, 20, 50, 250):
        path = BrownianPath((32,), 1.0, sde.t_min, torch.Generator().manual_seed(10), n_fine=500)
        incs[n] = _walk(path, sde.time_grid(n))
    for n in (20, 50, 250):
        coarse = incs[n].reshape(10, n // 10, 32).sum(1)
        assert torch.allclose(coarse, incs[10], atol=1e-5), n


def test_brownian_path_non_aligned_grids_have_variance_dt():
    """Grids that cut fine intervals use the Brownian bridge: increments stay N(0, dt), independent,
    and the total over [t_min, T] is still the same path's."""
    m = 40000
    sde = VPSDE()
    totals = []
    for ts in (sde.time_grid(7), sde.time_grid(13, "logsnr"), sde.time_grid(9, "quadratic")):
        path = BrownianPath(
            (m,), 1.0, sde.t_min, torch.Generator().manual_seed(11), n_fine=10, dtype=torch.float64
        )
        inc = _walk(path, ts)
        dt = -torch.diff(ts)
        var = inc.var(1)
        # sample variance standard error: dt sqrt(2/m) = 0.7% of dt
        assert torch.allclose(var, dt, rtol=0.04), var / dt
        corr = torch.corrcoef(inc)
        off = corr - torch.eye(len(dt), dtype=corr.dtype)
        assert float(off.abs().max()) < 0.025
        totals.append(inc.sum(0))
    for tot in totals[1:]:
        assert torch.allclose(tot, totals[0], atol=1e-9)


def test_brownian_path_refuses_to_walk_forward():
    path = BrownianPath((3,), 1.0, 0.0, torch.Generator().manual_seed(0))
    path.increment(0.5)
    with pytest.raises(ValueError, match="backwards"):
        path.increment(0.7)
    with pytest.raises(ValueError, match="t_start > t_end"):
        BrownianPath((3,), 0.0, 1.0)


def test_step_count_change_discretises_the_same_path():
    """Euler-Maruyama at N = 50 and N = 250 with one seed: close sample by sample (strong
    convergence on a shared path); with another seed they are unrelated."""
    sde = VPSDE()
    score = gaussian_score(sde)
    x = sde.prior_sample((500, 2), torch.Generator().manual_seed(12))

    def em(n: int, seed: int) -> torch.Tensor:
        return sample_euler_maruyama(
            score, sde, x, sde.time_grid(n), generator=torch.Generator().manual_seed(seed)
        )

    a, b, c = em(50, 13), em(250, 13), em(250, 14)
    same = float((a - b).pow(2).mean().sqrt())
    independent = float((b - c).pow(2).mean().sqrt())
    assert independent > 0.5 * DATA_STD  # ~ sqrt(2) x 0.5 for unrelated noise
    assert same < 0.2 * independent, (same, independent)


# --------------------------------------------------------------------------- divergence and bad input
def _nan_after(k: int, base):
    calls = {"n": 0}

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = base(x, t)
        return out * float("nan") if calls["n"] >= k else out

    return fn


@pytest.mark.parametrize("name", NAMES)
def test_divergence_raises_naming_the_step(name):
    sde = _sde_for(name)
    ts = _grid(name, sde, 10)
    x = sde.prior_sample((8, 2), torch.Generator().manual_seed(0))
    with pytest.raises(SamplerDiverged, match=r"step \d+"):
        _run(name, _nan_after(4, gaussian_score(sde)), sde, x, ts, generator=torch.Generator().manual_seed(0))

    def huge(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 1e12 * torch.ones_like(x)

    with pytest.raises(SamplerDiverged, match=r"step \d+.*\|x\|"):
        _run(name, huge, sde, x, ts, generator=torch.Generator().manual_seed(0))


def test_divergence_names_the_exact_step():
    sde = VPSDE()
    x = sde.prior_sample((8, 2), torch.Generator().manual_seed(0))
    with pytest.raises(SamplerDiverged, match=r"step 3 \(t="):
        sample_euler_maruyama(_nan_after(3, gaussian_score(sde)), sde, x, sde.time_grid(10))


@pytest.mark.parametrize("name", NAMES)
def test_bad_grids_and_shapes_are_rejected(name):
    sde = _sde_for(name)
    x = sde.prior_sample((8, 2))
    score = gaussian_score(sde)
    good = _grid(name, sde, 5)
    with pytest.raises(ValueError, match="decreasing"):
        _run(name, score, sde, x, good.flip(0))
    with pytest.raises(ValueError, match="decreasing"):
        _run(name, score, sde, x, torch.tensor([1.0, 0.5, 0.5, 0.1], dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2"):
        _run(name, score, sde, x, good[:1])
    with pytest.raises(ValueError, match="at least 2"):
        _run(name, score, sde, x, good[None])
    with pytest.raises(ValueError, match="batch-first"):
        _run(name, score, sde, torch.zeros(5), good)


def test_bad_sampler_options():
    sde = VPSDE()
    x, ts, score = sde.prior_sample((4, 2)), sde.time_grid(3), gaussian_score(sde)
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(score, sde, x, ts, eta=-0.5)
    with pytest.raises(ValueError, match="snr"):
        sample_predictor_corrector(score, sde, x, ts, snr=0.0)
    with pytest.raises(ValueError, match="step_scale"):
        sample_annealed_langevin(score, VESDE(), x, ts, step_scale=-1.0)


def test_ddim_eta_zero_is_deterministic_and_eta_one_is_not():
    sde = VPSDE()
    x, ts, score = (
        sde.prior_sample((16, 2), torch.Generator().manual_seed(1)),
        sde.time_grid(8),
        gaussian_score(sde),
    )
    runs = [
        sample_ddim(score, sde, x, ts, eta=e, generator=torch.Generator().manual_seed(s))
        for e in (0.0, 1.0)
        for s in (1, 2)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[2], runs[3])


@pytest.mark.parametrize("name", ["ode_heun", "dpm_solver_pp_2m"])
def test_second_order_solvers_are_accurate_on_gaussian_data(name):
    """The ODE maps N(0, I) to N(0, c^2 I) by a linear map: a 2nd-order solver at N = 20 gets its
    scale (c up to the prior mismatch) within 3%."""
    sde = VPSDE()
    x = sde.prior_sample((4000, 2), torch.Generator().manual_seed(2))
    out = _run(name, gaussian_score(sde), sde, x, _grid(name, sde, 20))
    ratio = (out / x).flatten()
    assert float(ratio.std()) < 1e-3
    assert float(ratio.mean()) == pytest.approx(DATA_STD, rel=0.03)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=lambda s: s.name)
def test_ddim_matches_its_closed_form_on_gaussian_data(sde):
    """For data N(0, c^2 I): x0_hat = (a c^2 / v) x and eps_hat = (s / v) x with v = a^2 c^2 + s^2,
    so each DDIM (eta = 0) step multiplies x by (a a' c^2 + s s') / v, and the final denoising step
    by a c^2 / v."""
    c2 = DATA_STD**2
    ts = sde.time_grid(12, "logsnr")
    x = sde.prior_sample((64, 2), torch.Generator().manual_seed(2)).double()
    out = sample_ddim(gaussian_score(sde), sde, x, ts)
    a, s = sde.alpha(ts), sde.sigma(ts)
    v = a * a * c2 + s * s
    factor = torch.prod((a[:-2] * a[1:-1] * c2 + s[:-2] * s[1:-1]) / v[:-2]) * a[-2] * c2 / v[-2]
    assert torch.allclose(out, factor * x, rtol=1e-9, atol=1e-12)
