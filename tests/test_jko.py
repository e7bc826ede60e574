"""Tests of geoflow.jko: the blob JKO against the closed-form Gaussian JKO step, exact marginals and POT.

Also its cache, the shipped preset paths, and the numerical check of Theorems 1 and 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gaussian_helpers import C0, M0, fit, gauss

from geoflow import gaussian, jko, wgf
from geoflow.densities import get_density
from geoflow.metrics import exact_w2
from geoflow.sde import VESDE, VPSDE

SDE = VPSDE()


# --------------------------------------------------------------------------- blob free energy
def test_blob_free_energy_approaches_the_gaussian_value(gen):
    # blob entropy of N(0, I) samples: mollified measure N(0, (1 + eps^2) I) up to O(1/n) terms
    x = gauss(np.zeros(2), np.eye(2)).sample(3000, gen)
    val = jko.blob_free_energy(x, 0.3)
    assert abs(val - 0.0) < 0.1
    assert val > jko.blob_free_energy(x, 0.6) - 1.0  # finite and ordered sensibly


# --------------------------------------------------------------------------- JKO
def test_one_blob_jko_step_of_a_gaussian_matches_the_closed_form(gen):
    x = gauss(M0, C0).sample(600, gen).to(torch.float64)
    h = 0.5
    y, _ = jko.jko_step(x, h, jko.blob_bandwidth(x, 2.0), tol=1e-4)
    m_x, c_x = fit(x.numpy())
    m_cf, c_cf = gaussian.jko_step_gaussian(m_x, c_x, h)
    m_y, c_y = fit(y.numpy())
    # the blob entropy is translation invariant, so the particle mean takes the exact implicit step
    assert np.abs(m_y - m_cf).max() < 1e-3
    moved = gaussian.bures_w2(m_x, c_x, m_cf, c_cf)  # how far the exact step goes
    err = gaussian.bures_w2(m_y, c_y, m_cf, c_cf)
    assert err < 0.15 * moved
    # an explicit Euler step (the wrong scheme) would be much further off than the blob error
    c_explicit = c_x + h * (2 * np.eye(2) - 2 * c_x)
    assert gaussian.bures_w2(m_cf, c_explicit, m_cf, c_cf) > 3 * err


def test_blob_jko_error_shrinks_with_h(gen):
    x = gauss(np.array([3.0, -2.0]), np.diag([0.3, 0.6])).sample(300, gen).to(torch.float64)
    t1 = float(wgf.vp_time(SDE, 1.0))  # flow time s = 1
    m_e, c_e = gaussian.ou_gaussian(*fit(x.numpy()), SDE, t1)
    errs = []
    for h in (0.5, 0.25, 0.125):
        path = jko.jko_path(x, SDE, h, [0.0, t1], tol=1e-4, cache=False)
        assert path.n_steps[0] == math.ceil(1.0 / h - 1e-9)
        m_y, _ = fit(path.particles[-1])
        errs.append(float(np.linalg.norm(m_y - m_e)))
    # first order in h: each halving of h roughly halves the error (implicit Euler in s)
    assert errs[0] > 0.1
    assert errs[1] < 0.65 * errs[0] and errs[2] < 0.65 * errs[1]


def test_jko_path_decreases_its_blob_energy_and_tracks_the_exact_path(gen):
    mix = get_density("asymmetric")
    x0 = mix.sample(300, gen)
    ts = [0.0, 0.1, 0.25, 0.5]
    path = jko.jko_path(x0, SDE, 0.1, ts, bandwidth=0.25, cache=False)
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
    a = jko.jko_path(x0, SDE, 0.5, 3, cache_dir=tmp_path)
    b = jko.jko_path(x0, SDE, 0.5, 3, cache_dir=tmp_path)
    assert b.seconds == 0.0 or b.seconds == a.seconds
    assert np.array_equal(a.particles, b.particles)
    jko._MEMO.clear()
    c = jko.jko_path(x0, SDE, 0.5, 3, cache_dir=tmp_path)  # from disk
    assert np.array_equal(a.particles, c.particles) and np.array_equal(a.free_energy, c.free_energy)
    d = jko.jko_path(x0, SDE, 0.25, 3, cache=False)
    assert not np.array_equal(a.particles, d.particles)


def test_jko_identity_coupling_is_optimal_for_small_steps(gen):
    x0 = get_density("three_component").sample(200, gen)
    path = jko.jko_path(x0, SDE, 0.05, 3, check_coupling=True, cache=False)
    assert np.all(np.isfinite(path.coupling_gap))
    assert np.all(path.coupling_gap > -1e-9)  # identity cost >= exact W2^2 always
    assert np.all(path.coupling_gap < 1e-6)


# --------------------------------------------------------------------------- theorems
def test_theorem_check_table(gen):
    rows = jko.theorem_check(get_density("three_component"), SDE, n=250, keyframes=[0.0, 0.15, 0.4], h=0.1,
                             dt=4e-3, generator=gen)  # fmt: skip
    assert [r["t"] for r in rows] == [0.0, 0.15, 0.4]
    for r in rows:
        for col in ("w2_forward_em", "w2_jko", "w2_reverse"):
            assert r[col] < 1.5 * r["w2_floor"] + 0.08, (col, r)
        for col in ("w2_forward_em_given_x0", "w2_jko_given_x0"):
            assert r[col] < 1.5 * r["w2_floor_given_x0"] + 0.05, (col, r)
        assert abs(r["free_energy_jko"] - r["free_energy_exact"]) < 0.35


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("h", [0.0, -0.1, float("nan")])
def test_bad_h_is_rejected(h, gen):
    x0 = get_density("eight_gaussians").sample(50, gen)
    with pytest.raises(ValueError, match=r"h must be a number in \(0"):
        jko.jko_path(x0, SDE, h, 3)


def test_jko_bad_inputs_name_the_valid_range(gen):
    x0 = get_density("eight_gaussians").sample(50, gen)
    with pytest.raises(ValueError, match="at least 10 particles"):
        jko.jko_path(x0[:5], SDE, 0.1, 3)
    with pytest.raises(ValueError, match=r"\[0, T\] = \[0, 1.0\]"):
        jko.jko_path(x0, SDE, 0.1, [0.0, 1.5])
    with pytest.raises(ValueError, match="VP SDE"):
        jko.jko_path(x0, VESDE(), 0.1, 3)


# --------------------------------------------------------------------------- shipped paths
def test_shipped_preset_flows_are_served_for_their_exact_inputs():
    files = sorted(jko.PRECOMPUTED_DIR.glob("jko-*.npz"))
    if not files:
        pytest.skip("no precomputed flows shipped in pretrained/flows/")
    path = jko.preset_jko_path("eight_gaussians")
    assert path.seconds == 0.0  # loaded, not computed
    assert path.particles.shape == (jko.PRESET_FLOW["keyframes"], jko.PRESET_FLOW["n"], 2)
    assert path.particles.dtype == np.float32
    # the shipped frame at t = 0 is exactly the preset's data sample on this machine
    assert np.array_equal(path.particles[0], jko.preset_x0("eight_gaussians").numpy())
    assert np.allclose(path.t, np.linspace(0, 1, jko.PRESET_FLOW["keyframes"]))
