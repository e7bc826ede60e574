"""Tests of geoflow.wgf against closed forms (Gaussian flows, Bures W2, KL) and POT.

Every reference is an oracle: the OU moment ODEs, the Gaussian KL and Bures-W2 formulas, the
closed-form Gaussian JKO step (checked itself against a direct numerical minimisation), exact
mixture log-densities, and POT's exact optimal transport.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from geoflow import wgf
from geoflow.cli_flow import register, write_figure
from geoflow.densities import GaussianMixture, get_density
from geoflow.metrics import exact_w2
from geoflow.sde import VESDE, VPSDE

SDE = VPSDE()


def _rot(a: float) -> np.ndarray:
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _gauss(mean, cov) -> GaussianMixture:
    return GaussianMixture([1.0], [mean], [cov], name="gauss")


M0 = np.array([1.0, -0.5])
C0 = _rot(0.5) @ np.diag([0.2, 2.0]) @ _rot(0.5).T


def _fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    return x.mean(0), np.cov(x.T)


# --------------------------------------------------------------------------- closed forms
def test_ou_moments_solve_the_moment_odes():
    # RK4 on dm/dt = -beta m, dC/dt = -2 beta C + 2 beta I against the closed form a m, a^2 C + s^2 I
    def rhs(t, m, c):
        b = SDE.beta_min + (SDE.beta_max - SDE.beta_min) * t
        return -b * m, -2 * b * c + 2 * b * np.eye(2)

    m, c, t, n = M0.copy(), C0.copy(), 0.0, 2000
    dt = 0.7 / n
    for _ in range(n):
        k1 = rhs(t, m, c)
        k2 = rhs(t + dt / 2, m + dt / 2 * k1[0], c + dt / 2 * k1[1])
        k3 = rhs(t + dt / 2, m + dt / 2 * k2[0], c + dt / 2 * k2[1])
        k4 = rhs(t + dt, m + dt * k3[0], c + dt * k3[1])
        m = m + dt / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        c = c + dt / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        t += dt
    me, ce = wgf.ou_gaussian(M0, C0, SDE, 0.7)
    assert np.abs(me - m).max() < 1e-8
    assert np.abs(ce - c).max() < 1e-8


@pytest.mark.parametrize("coupling", wgf.COUPLINGS)
def test_exact_marginal_samples_have_the_ou_moments(coupling, gen):
    ts = [0.0, 0.1, 0.3, 1.0]
    path = wgf.exact_marginal_samples(_gauss(M0, C0), SDE, ts, 20000, gen, coupling=coupling)
    assert path.shape == (4, 20000, 2) and path.dtype == np.float32
    for k, t in enumerate(ts):
        me, ce = wgf.ou_gaussian(M0, C0, SDE, t)
        m, c = _fit(path[k])
        assert np.abs(m - me).max() < 0.05
        assert np.abs(c - ce).max() < 0.08 * max(1.0, np.abs(ce).max())
    if coupling == "sde":
        # exact SDE paths: Cov(x_t, x_t') = (a(t')/a(t)) Var(x_t) per coordinate
        r = float(SDE.alpha(0.3) / SDE.alpha(0.1))
        x1, x2 = path[1].astype(np.float64), path[2].astype(np.float64)
        cross = ((x1 - x1.mean(0)) * (x2 - x2.mean(0))).mean(0)
        assert np.allclose(cross, r * x1.var(0), atol=0.05)


def test_gaussian_kl_matches_monte_carlo_and_vanishes_on_itself(gen):
    m1, c1 = M0, C0
    m2, c2 = np.array([0.3, 0.2]), np.array([[1.0, 0.3], [0.3, 0.5]])
    p = torch.distributions.MultivariateNormal(torch.tensor(m1), torch.tensor(c1))
    q = torch.distributions.MultivariateNormal(torch.tensor(m2), torch.tensor(c2))
    x = _gauss(m1, c1).sample(100000, gen).to(torch.float64)
    mc = float((p.log_prob(x) - q.log_prob(x)).mean())
    kl = wgf.gaussian_kl(m1, c1, m2, c2)
    assert abs(kl - mc) < 0.03 * max(1.0, kl)
    assert abs(wgf.gaussian_kl(m1, c1, m1, c1)) < 1e-12
    assert abs(wgf.free_energy_gaussian(np.zeros(2), np.eye(2))) < 1e-12


def test_bures_w2_matches_pot_on_large_samples(gen):
    m2, c2 = np.array([-1.0, 1.5]), np.array([[0.5, -0.2], [-0.2, 0.8]])
    ref = wgf.bures_w2(M0, C0, m2, c2)
    # a 1-D check of the formula itself: W2 = sqrt(dm^2 + (sd1 - sd2)^2)
    assert abs(wgf.bures_w2([0.0], [[4.0]], [1.0], [[1.0]]) - math.sqrt(2.0)) < 1e-12
    x = _gauss(M0, C0).sample(1000, gen)
    y = _gauss(m2, c2).sample(1000, gen)
    pot = exact_w2(x, y)
    floor = exact_w2(_gauss(M0, C0).sample(1000, gen), x)  # finite-sample bias scale
    assert abs(pot - ref) < 0.1 * ref + floor


# --------------------------------------------------------------------------- free energy
def test_free_energy_exact_single_gaussian_closed_form_grid_and_mc(gen):
    gm = _gauss(M0, C0)
    ts = np.array([0.0, 0.2, 0.6])
    closed = np.array([wgf.free_energy_gaussian(*wgf.ou_gaussian(M0, C0, SDE, t)) for t in ts])
    auto = wgf.free_energy_exact(gm, ts, SDE)
    grid = wgf.free_energy_exact(gm, ts, SDE, method="grid")
    mc = wgf.free_energy_exact(gm, ts, SDE, method="mc", n_mc=100000, generator=gen)
    assert np.allclose(auto, closed, atol=1e-12)
    assert np.allclose(grid, closed, atol=1e-5)
    assert np.allclose(mc, closed, atol=0.02)


def test_free_energy_exact_mixture_grid_agrees_with_monte_carlo_and_decreases(gen):
    mix = get_density("three_component")
    ts = np.array([0.0, 0.1, 0.3])
    grid = wgf.free_energy_exact(mix, ts, SDE, method="grid")
    mc = wgf.free_energy_exact(mix, ts, SDE, method="mc", n_mc=200000, generator=gen)
    assert np.allclose(grid, mc, atol=0.015)
    # Theorem 1: the free energy decreases along the flow, to ~0 at T
    path = wgf.free_energy_exact(mix, np.linspace(0, 1, 12), SDE)
    assert np.all(np.diff(path) < 0)
    assert 0 <= path[-1] < 1e-3


def test_free_energy_particles_matches_closed_form(gen):
    x = _gauss(M0, C0).sample(8000, gen)
    est = wgf.free_energy_particles(x)
    assert abs(est - wgf.free_energy_gaussian(M0, C0)) < 0.05


def test_blob_free_energy_approaches_the_gaussian_value(gen):
    # blob entropy of N(0, I) samples: mollified measure N(0, (1 + eps^2) I) up to O(1/n) terms
    x = _gauss(np.zeros(2), np.eye(2)).sample(3000, gen)
    val = wgf.blob_free_energy(x, 0.3)
    assert abs(val - 0.0) < 0.1
    assert val > wgf.blob_free_energy(x, 0.6) - 1.0  # finite and ordered sensibly


# --------------------------------------------------------------------------- velocity, density
def test_velocity_fields_match_finite_difference_scores():
    mix = get_density("asymmetric")
    t = 0.15
    field = wgf.velocity_field(mix, SDE, t, bounds=(-3, 3), n_grid=9, kind="forward")
    x = torch.tensor(np.stack([field.X.ravel(), field.Y.ravel()], 1), dtype=torch.float64)
    e = 1e-5
    fd = torch.stack(
        [
            (mix.log_prob(x + e * torch.eye(2)[i], t, SDE) - mix.log_prob(x - e * torch.eye(2)[i], t, SDE))
            / (2 * e)
            for i in range(2)
        ],
        1,
    )
    b = float(SDE.beta(t))
    fwd = -b * (fd + x)
    assert np.allclose(field.U.ravel(), fwd[:, 0].numpy(), rtol=1e-3, atol=1e-3)
    assert np.allclose(field.V.ravel(), fwd[:, 1].numpy(), rtol=1e-3, atol=1e-3)
    rev = wgf.velocity_field(mix.score_fn(SDE), SDE, t, bounds=(-3, 3), n_grid=9, kind="reverse_sde")
    assert np.allclose(rev.U.ravel(), (b * (2 * fd + x))[:, 0].numpy(), rtol=1e-3, atol=1e-3)
    ode = wgf.velocity_field(mix, SDE, t, bounds=(-3, 3), n_grid=9, kind="reverse_ode")
    assert np.allclose(ode.U, -field.U, atol=1e-5) and np.allclose(ode.V, -field.V, atol=1e-5)


def test_forward_velocity_solves_the_continuity_equation():
    # Theorem 1: d p_t / dt + div(p_t v_t) = 0 with v = -beta (score + x), checked by finite differences
    mix = get_density("asymmetric")
    t, dt, n = 0.2, 1e-4, 161
    grid_p = wgf.marginal_density_grid(mix, SDE, t, bounds=(-4, 4), n_grid=n)
    dpdt = (
        wgf.marginal_density_grid(mix, SDE, t + dt, bounds=(-4, 4), n_grid=n).P.astype(np.float64)
        - wgf.marginal_density_grid(mix, SDE, t - dt, bounds=(-4, 4), n_grid=n).P.astype(np.float64)
    ) / (2 * dt)
    v = wgf.velocity_field(mix, SDE, t, bounds=(-4, 4), n_grid=n)
    p = grid_p.P.astype(np.float64)
    step = 8.0 / (n - 1)
    div = np.gradient(p * v.U, step, axis=1) + np.gradient(p * v.V, step, axis=0)
    resid = dpdt + div
    assert np.abs(resid).max() < 0.03 * np.abs(dpdt).max()


def test_marginal_density_grid_is_normalised_and_exact():
    mix = get_density("three_component")
    g = wgf.marginal_density_grid(mix, SDE, 0.1, bounds=(-6, 6), n_grid=301)
    area = (12 / 300) ** 2
    assert abs(float(g.P.sum()) * area - 1.0) < 1e-3
    pts = torch.tensor([[g.X[10, 20], g.Y[10, 20]], [g.X[150, 140], g.Y[150, 140]]], dtype=torch.float64)
    ref = torch.exp(mix.log_prob(pts, 0.1, SDE)).numpy()
    assert np.allclose([g.P[10, 20], g.P[150, 140]], ref, rtol=1e-4)


# --------------------------------------------------------------------------- JKO
def test_gaussian_jko_step_closed_form_is_the_minimiser_over_gaussians():
    # direct minimisation of KL(N(m', C') || N(0, I)) + W2^2(N(m', C'), N(m, C)) / 2h over (m', C')
    h = 0.4

    def objective(p):
        m = p[:2]
        lch = np.array([[math.exp(p[2]), 0.0], [p[3], math.exp(p[4])]])
        c = lch @ lch.T
        return wgf.free_energy_gaussian(m, c) + wgf.bures_w2(m, c, M0, C0) ** 2 / (2 * h)

    res = minimize(objective, np.array([0.5, -0.2, 0.0, 0.0, 0.0]), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000, "maxfev": 40000})  # fmt: skip
    p = res.x
    lch = np.array([[math.exp(p[2]), 0.0], [p[3], math.exp(p[4])]])
    m_cf, c_cf = wgf.jko_step_gaussian(M0, C0, h)
    assert np.abs(p[:2] - m_cf).max() < 1e-4
    assert np.abs(lch @ lch.T - c_cf).max() < 1e-4
    # and it is a fixed point at the target
    m_pi, c_pi = wgf.jko_step_gaussian(np.zeros(2), np.eye(2), h)
    assert np.allclose(m_pi, 0) and np.allclose(c_pi, np.eye(2))


def test_one_blob_jko_step_of_a_gaussian_matches_the_closed_form(gen):
    x = _gauss(M0, C0).sample(600, gen).to(torch.float64)
    h = 0.5
    y, _ = wgf.jko_step(x, h, wgf.blob_bandwidth(x, 2.0), tol=1e-4)
    m_x, c_x = _fit(x.numpy())
    m_cf, c_cf = wgf.jko_step_gaussian(m_x, c_x, h)
    m_y, c_y = _fit(y.numpy())
    # the blob entropy is translation invariant, so the particle mean takes the exact implicit step
    assert np.abs(m_y - m_cf).max() < 1e-3
    moved = wgf.bures_w2(m_x, c_x, m_cf, c_cf)  # how far the exact step goes
    err = wgf.bures_w2(m_y, c_y, m_cf, c_cf)
    assert err < 0.15 * moved
    # an explicit Euler step (the wrong scheme) would be much further off than the blob error
    c_explicit = c_x + h * (2 * np.eye(2) - 2 * c_x)
    assert wgf.bures_w2(m_cf, c_explicit, m_cf, c_cf) > 3 * err


def test_blob_jko_error_shrinks_with_h(gen):
    x = _gauss(np.array([3.0, -2.0]), np.diag([0.3, 0.6])).sample(300, gen).to(torch.float64)
    t1 = float(wgf.vp_time(SDE, 1.0))  # flow time s = 1
    m_e, c_e = wgf.ou_gaussian(*_fit(x.numpy()), SDE, t1)
    errs = []
    for h in (0.5, 0.25, 0.125):
        path = wgf.jko_path(x, SDE, h, [0.0, t1], tol=1e-4, cache=False)
        assert path.n_steps[0] == math.ceil(1.0 / h - 1e-9)
        m_y, _ = _fit(path.particles[-1])
        errs.append(float(np.linalg.norm(m_y - m_e)))
    # first order in h: each halving of h roughly halves the error (implicit Euler in s)
    assert errs[0] > 0.1
    assert errs[1] < 0.65 * errs[0] and errs[2] < 0.65 * errs[1]


def test_jko_path_decreases_its_blob_energy_and_tracks_the_exact_path(gen):
    mix = get_density("asymmetric")
    x0 = mix.sample(300, gen)
    ts = [0.0, 0.1, 0.25, 0.5]
    path = wgf.jko_path(x0, SDE, 0.1, ts, bandwidth=0.25, cache=False)
    assert path.particles.shape == (4, 300, 2) and np.allclose(path.t, ts)
    assert np.allclose(path.s, wgf.flow_time(SDE, ts))
    # a JKO minimiser never increases the functional it minimises
    assert np.all(np.diff(path.free_energy_blob) < 1e-3)
    ex = wgf.exact_marginal_samples(mix, SDE, ts, 300, gen)
    ex2 = wgf.exact_marginal_samples(mix, SDE, ts, 300, gen)
    for k in range(1, 4):
        assert exact_w2(path.particles[k], ex[k]) < 1.3 * exact_w2(ex2[k], ex[k]) + 0.05


def test_jko_cache_same_inputs_same_result(tmp_path, gen):
    x0 = get_density("eight_gaussians").sample(60, gen)
    a = wgf.jko_path(x0, SDE, 0.5, 3, cache_dir=tmp_path)
    b = wgf.jko_path(x0, SDE, 0.5, 3, cache_dir=tmp_path)
    assert b.seconds == 0.0 or b.seconds == a.seconds
    assert np.array_equal(a.particles, b.particles)
    wgf._MEMO.clear()
    c = wgf.jko_path(x0, SDE, 0.5, 3, cache_dir=tmp_path)  # from disk
    assert np.array_equal(a.particles, c.particles) and np.array_equal(a.free_energy, c.free_energy)
    d = wgf.jko_path(x0, SDE, 0.25, 3, cache=False)
    assert not np.array_equal(a.particles, d.particles)


def test_jko_identity_coupling_is_optimal_for_small_steps(gen):
    x0 = get_density("three_component").sample(200, gen)
    path = wgf.jko_path(x0, SDE, 0.05, 3, check_coupling=True, cache=False)
    assert np.all(np.isfinite(path.coupling_gap))
    assert np.all(path.coupling_gap > -1e-9)  # identity cost >= exact W2^2 always
    assert np.all(path.coupling_gap < 1e-6)


# --------------------------------------------------------------------------- splitting, theorems
def test_forward_splitting_is_the_sde(gen):
    x = _gauss(M0, C0).sample(20000, gen)
    path = wgf.splitting_path(x, SDE, [0.0, 0.2, 0.5], direction="forward", dt=2e-3, generator=gen)
    assert np.allclose(path.t, [0.0, 0.2, 0.5]) and path.n_steps == 250
    for k, t in enumerate(path.t):
        m, c = _fit(path.particles[k])
        me, ce = wgf.ou_gaussian(*_fit(path.particles[0]), SDE, t)
        assert np.abs(m - me).max() < 0.03 and np.abs(c - ce).max() < 0.06


def test_reverse_splitting_retraces_the_marginals(gen):
    # Theorem 2: from N(0, I) at T with the exact score, the marginal at t is the forward one
    gm = _gauss(M0, C0)
    prior = SDE.prior_sample((20000, 2), gen, dtype=torch.float64)
    path = wgf.splitting_path(
        prior, SDE, [0.0, 0.3, 1.0], direction="reverse", score_fn=gm, dt=2e-3, generator=gen
    )
    assert np.allclose(path.t, [1.0, 0.3, 0.0])
    for k, t in enumerate(path.t):
        me, ce = wgf.ou_gaussian(M0, C0, SDE, t)
        assert wgf.bures_w2(*_fit(path.particles[k]), me, ce) < 0.06


def test_theorem_check_table(gen):
    rows = wgf.theorem_check(get_density("three_component"), SDE, n=250, keyframes=[0.0, 0.15, 0.4], h=0.1,
                             dt=4e-3, generator=gen)  # fmt: skip
    assert [r["t"] for r in rows] == [0.0, 0.15, 0.4]
    for r in rows:
        for col in ("w2_forward_em", "w2_jko", "w2_reverse"):
            assert r[col] < 1.5 * r["w2_floor"] + 0.08, (col, r)
        for col in ("w2_forward_em_given_x0", "w2_jko_given_x0"):
            assert r[col] < 1.5 * r["w2_floor_given_x0"] + 0.05, (col, r)
        assert abs(r["free_energy_jko"] - r["free_energy_exact"]) < 0.35


# --------------------------------------------------------------------------- W2 paths, geodesic
def test_mccann_geodesic_endpoints_and_constant_speed(gen):
    x = get_density("eight_gaussians").sample(150, gen)
    y = SDE.prior_sample((150, 2), gen)
    path, length = wgf.mccann_geodesic(x, y, 5)
    assert path.shape == (5, 150, 2)
    assert np.allclose(path[0], x.numpy(), atol=1e-6)
    assert np.allclose(np.sort(path[-1], axis=0), np.sort(y.numpy(), axis=0), atol=1e-6)
    assert abs(length - exact_w2(x, y)) < 1e-6
    steps = wgf.w2_steps(path)
    assert np.allclose(steps, length / 4, rtol=1e-4)
    assert abs(exact_w2(path[1], path[3]) - 0.5 * length) < 1e-4 * length
    assert abs(wgf.path_length(path) - length) < 1e-4 * length
    # the straight-line path (identity coupling) is no shorter than the geodesic
    assert wgf.path_length(path, coupling="identity") >= length - 1e-6


def test_exact_path_length_of_a_gaussian_matches_its_moment_curve(gen):
    # for N(m, c I) the marginals stay N(a m, (a^2 c + 1 - a^2) I): speed^2 = |dm/ds|^2 + d (d sd/ds)^2
    m, c = np.array([2.0, 0.0]), 0.5
    s = np.linspace(0, float(SDE.int_beta(1.0)), 20001)
    a = np.exp(-s)
    sd = np.sqrt(a * a * c + 1 - a * a)
    ref = np.trapezoid(np.sqrt(np.gradient(a * 2.0, s) ** 2 + 2 * np.gradient(sd, s) ** 2), s)
    length = wgf.exact_path_length(_gauss(m, c * np.eye(2)), SDE, n_mc=20000, generator=gen)
    assert abs(length - ref) < 0.01 * ref
    # and the W2 geodesic between the end points is shorter: |m| (1 - a(T)) and sd from sqrt(c) to ~1
    geo = wgf.bures_w2(m, c * np.eye(2), *wgf.ou_gaussian(m, c * np.eye(2), SDE, 1.0))
    assert geo < length


def test_gradient_flow_path_is_longer_than_the_geodesic(gen):
    mix = get_density("asymmetric")
    ts = np.linspace(0, 1, 8)
    ex = wgf.exact_marginal_samples(mix, SDE, ts, 200, gen)
    _, geo = wgf.mccann_geodesic(ex[0], ex[-1], 2)
    assert wgf.path_length(ex) > geo
    assert wgf.w2_along(ex, ex).max() < 1e-6


# --------------------------------------------------------------------------- time conventions, bad input
def test_vp_time_inverts_flow_time():
    ts = np.array([0.0, 0.01, 0.3, 0.77, 1.0])
    assert np.allclose(wgf.vp_time(SDE, wgf.flow_time(SDE, ts)), ts, atol=1e-10)


@pytest.mark.parametrize("h", [0.0, -0.1, float("nan")])
def test_bad_h_is_rejected(h, gen):
    x0 = get_density("eight_gaussians").sample(50, gen)
    with pytest.raises(ValueError, match=r"h must be a number in \(0"):
        wgf.jko_path(x0, SDE, h, 3)


def test_bad_inputs_name_the_valid_range(gen):
    x0 = get_density("eight_gaussians").sample(50, gen)
    with pytest.raises(ValueError, match="at least 10 particles"):
        wgf.jko_path(x0[:5], SDE, 0.1, 3)
    with pytest.raises(ValueError, match="at least 10 particles"):
        wgf.free_energy_particles(x0[:4])
    with pytest.raises(ValueError, match=r"\[0, T\] = \[0, 1.0\]"):
        wgf.jko_path(x0, SDE, 0.1, [0.0, 1.5])
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        wgf.exact_marginal_samples(get_density("asymmetric"), SDE, [-0.1, 0.5], 10, gen)
    with pytest.raises(ValueError, match="eight_gaussians"):
        wgf.exact_marginal_samples(get_density("two_moons"), SDE, [0.0, 0.5], 10, gen)
    with pytest.raises(ValueError, match="Gaussian mixture"):
        wgf.marginal_density_grid(get_density("swiss_roll"), SDE, 0.3)
    with pytest.raises(ValueError, match="valid: forward, reverse_sde, reverse_ode"):
        wgf.velocity_field(get_density("asymmetric"), SDE, 0.3, kind="sideways")
    with pytest.raises(ValueError, match="VP SDE"):
        wgf.jko_path(x0, VESDE(), 0.1, 3)
    with pytest.raises(ValueError, match="flow time s must lie in"):
        wgf.vp_time(SDE, 100.0)


def test_pot_iteration_limit_is_never_silent(gen):
    x = get_density("eight_gaussians").sample(100, gen)
    y = SDE.prior_sample((100, 2), gen)
    with pytest.raises(RuntimeError, match="did not converge"):
        wgf.mccann_geodesic(x, y, 3, num_itermax=5)
    with pytest.raises(RuntimeError, match="did not converge"):
        exact_w2(x, y, num_itermax=5)


# --------------------------------------------------------------------------- CLI
def _parse(argv):
    parser = argparse.ArgumentParser(prog="geoflow")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_flow_writes_the_arrays(tmp_path, capsys):
    out = tmp_path / "flow.npz"
    args = _parse(["flow", "--density", "asymmetric", "--h", "0.3", "--keyframes", "4", "--n", "80",
                   "--out", str(out), "--seed", "3"])  # fmt: skip
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    z = np.load(out)
    assert z["t"].shape == (4,) and z["jko"].shape == (4, 80, 2) and z["exact"].shape == (4, 80, 2)
    for key in ("free_energy", "free_energy_exact", "w2_to_exact", "w2_floor"):
        assert z[key].shape == (4,) and np.all(np.isfinite(z[key]))
    assert np.allclose(z["exact"][0], z["jko"][0])  # both start at the same data particles
    assert float(z["geodesic_length"]) <= float(z["flow_length"]) + 0.2


def test_cli_flow_non_mixture_has_no_exact_path(tmp_path):
    out = tmp_path / "moons.npz"
    args = _parse(
        ["flow", "--density", "two_moons", "--h", "0.5", "--keyframes", "3", "--n", "50", "--out", str(out)]
    )
    assert args.func(args) == 0
    z = np.load(out)
    assert "exact" not in z.files and "free_energy_exact" not in z.files and z["w2_to_exact"].shape == (3,)


@pytest.mark.parametrize(
    "extra",
    [["--h", "0"], ["--n", "3"], ["--density", "nope"], ["--keyframes", "1"]],
)
def test_cli_flow_bad_input_exits_2_with_one_line(extra, tmp_path, capsys):
    base = {"--density": "asymmetric", "--h": "0.3", "--keyframes": "3", "--n": "50"}
    base.update(dict(zip(extra[::2], extra[1::2], strict=True)))
    argv = ["flow", *[v for kv in base.items() for v in kv], "--out", str(tmp_path / "x.npz")]
    args = _parse(argv)
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err and "Traceback" not in err


def test_geoflow_cli_dispatches_flow(tmp_path, capsys):
    from geoflow.cli import main

    assert main(["flow", "--density", "asymmetric", "--h", "-1", "--out", str(tmp_path / "x.npz")]) == 2
    assert "h must be a number in (0" in capsys.readouterr().err
    assert main(["flow", "--density", "three_component", "--h", "0.5", "--keyframes", "3", "--n", "40",
                 "--out", str(tmp_path / "y.npz")]) == 0  # fmt: skip
    assert np.load(tmp_path / "y.npz")["jko"].shape == (3, 40, 2)


def test_write_figure_says_when_it_cannot_export(tmp_path, monkeypatch):
    import plotly.graph_objects as go

    def fail(self, *a, **k):
        raise RuntimeError("no browser")

    monkeypatch.setattr(go.Figure, "write_image", fail)
    res = {
        "t": np.linspace(0, 1, 3),
        "jko": np.zeros((3, 5, 2), dtype=np.float32) + np.arange(5)[None, :, None],
        "free_energy": np.ones(3),
        "free_energy_blob": np.ones(3),
        "w2_to_exact": np.ones(3),
        "w2_floor": np.ones(3),
        "density": np.array("demo"),
        "h": np.array(0.1),
    }
    msg = write_figure(res, tmp_path / "f.png")
    assert msg.startswith("figure skipped") and "no browser" in msg


def test_shipped_preset_flows_are_served_for_their_exact_inputs():
    files = sorted(wgf.PRECOMPUTED_DIR.glob("jko-*.npz"))
    if not files:
        pytest.skip("no precomputed flows shipped in pretrained/flows/")
    path = wgf.preset_jko_path("eight_gaussians")
    assert path.seconds == 0.0  # loaded, not computed
    assert path.particles.shape == (wgf.PRESET_FLOW["keyframes"], wgf.PRESET_FLOW["n"], 2)
    assert path.particles.dtype == np.float32
    # the shipped frame at t = 0 is exactly the preset's data sample on this machine
    assert np.array_equal(path.particles[0], wgf.preset_x0("eight_gaussians").numpy())
    assert np.allclose(path.t, np.linspace(0, 1, wgf.PRESET_FLOW["keyframes"]))
