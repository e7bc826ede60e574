"""Tests of geoflow.wgf against closed forms (Gaussian flows, KL), exact mixture densities and POT.

Every reference is an oracle: the OU moment ODEs' closed form (:func:`geoflow.gaussian.ou_gaussian`),
the Gaussian KL and Bures-W2 formulas, finite-difference scores and the continuity equation, exact
mixture log-densities, and POT's exact optimal transport. Also the ``geoflow flow`` CLI.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from gaussian_helpers import C0, M0, fit, gauss

from geoflow import gaussian, wgf
from geoflow.cli.flow import register, write_figure
from geoflow.densities import get_density
from geoflow.sde import VPSDE

SDE = VPSDE()


# --------------------------------------------------------------------------- exact marginals
@pytest.mark.parametrize("coupling", wgf.COUPLINGS)
def test_exact_marginal_samples_have_the_ou_moments(coupling, gen):
    ts = [0.0, 0.1, 0.3, 1.0]
    path = wgf.exact_marginal_samples(gauss(M0, C0), SDE, ts, 20000, gen, coupling=coupling)
    assert path.shape == (4, 20000, 2) and path.dtype == np.float32
    for k, t in enumerate(ts):
        me, ce = gaussian.ou_gaussian(M0, C0, SDE, t)
        m, c = fit(path[k])
        assert np.abs(m - me).max() < 0.05
        assert np.abs(c - ce).max() < 0.08 * max(1.0, np.abs(ce).max())
    if coupling == "sde":
        # exact SDE paths: Cov(x_t, x_t') = (a(t')/a(t)) Var(x_t) per coordinate
        r = float(SDE.alpha(0.3) / SDE.alpha(0.1))
        x1, x2 = path[1].astype(np.float64), path[2].astype(np.float64)
        cross = ((x1 - x1.mean(0)) * (x2 - x2.mean(0))).mean(0)
        assert np.allclose(cross, r * x1.var(0), atol=0.05)


# --------------------------------------------------------------------------- free energy
def test_free_energy_exact_single_gaussian_closed_form_grid_and_mc(gen):
    gm = gauss(M0, C0)
    ts = np.array([0.0, 0.2, 0.6])
    closed = np.array([gaussian.free_energy_gaussian(*gaussian.ou_gaussian(M0, C0, SDE, t)) for t in ts])
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
    x = gauss(M0, C0).sample(8000, gen)
    est = wgf.free_energy_particles(x)
    assert abs(est - gaussian.free_energy_gaussian(M0, C0)) < 0.05


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


# --------------------------------------------------------------------------- splitting, path length
def test_forward_splitting_is_the_sde(gen):
    x = gauss(M0, C0).sample(20000, gen)
    path = wgf.splitting_path(x, SDE, [0.0, 0.2, 0.5], direction="forward", dt=2e-3, generator=gen)
    assert np.allclose(path.t, [0.0, 0.2, 0.5]) and path.n_steps == 250
    for k, t in enumerate(path.t):
        m, c = fit(path.particles[k])
        me, ce = gaussian.ou_gaussian(*fit(path.particles[0]), SDE, t)
        assert np.abs(m - me).max() < 0.03 and np.abs(c - ce).max() < 0.06


def test_reverse_splitting_retraces_the_marginals(gen):
    # Theorem 2: from N(0, I) at T with the exact score, the marginal at t is the forward one
    gm = gauss(M0, C0)
    prior = SDE.prior_sample((20000, 2), gen, dtype=torch.float64)
    path = wgf.splitting_path(
        prior, SDE, [0.0, 0.3, 1.0], direction="reverse", score_fn=gm, dt=2e-3, generator=gen
    )
    assert np.allclose(path.t, [1.0, 0.3, 0.0])
    for k, t in enumerate(path.t):
        me, ce = gaussian.ou_gaussian(M0, C0, SDE, t)
        assert gaussian.bures_w2(*fit(path.particles[k]), me, ce) < 0.06


def test_exact_path_length_of_a_gaussian_matches_its_moment_curve(gen):
    # for N(m, c I) the marginals stay N(a m, (a^2 c + 1 - a^2) I): speed^2 = |dm/ds|^2 + d (d sd/ds)^2
    m, c = np.array([2.0, 0.0]), 0.5
    s = np.linspace(0, float(SDE.int_beta(1.0)), 20001)
    a = np.exp(-s)
    sd = np.sqrt(a * a * c + 1 - a * a)
    ref = np.trapezoid(np.sqrt(np.gradient(a * 2.0, s) ** 2 + 2 * np.gradient(sd, s) ** 2), s)
    length = wgf.exact_path_length(gauss(m, c * np.eye(2)), SDE, n_mc=20000, generator=gen)
    assert abs(length - ref) < 0.01 * ref
    # and the W2 geodesic between the end points is shorter: |m| (1 - a(T)) and sd from sqrt(c) to ~1
    geo = gaussian.bures_w2(m, c * np.eye(2), *gaussian.ou_gaussian(m, c * np.eye(2), SDE, 1.0))
    assert geo < length


# --------------------------------------------------------------------------- time conventions, bad input
def test_vp_time_inverts_flow_time():
    ts = np.array([0.0, 0.01, 0.3, 0.77, 1.0])
    assert np.allclose(wgf.vp_time(SDE, wgf.flow_time(SDE, ts)), ts, atol=1e-10)


def test_bad_inputs_name_the_valid_range(gen):
    x0 = get_density("eight_gaussians").sample(50, gen)
    with pytest.raises(ValueError, match="at least 10 particles"):
        wgf.free_energy_particles(x0[:4])
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        wgf.exact_marginal_samples(get_density("asymmetric"), SDE, [-0.1, 0.5], 10, gen)
    with pytest.raises(ValueError, match="eight_gaussians"):
        wgf.exact_marginal_samples(get_density("two_moons"), SDE, [0.0, 0.5], 10, gen)
    with pytest.raises(ValueError, match="Gaussian mixture"):
        wgf.marginal_density_grid(get_density("swiss_roll"), SDE, 0.3)
    with pytest.raises(ValueError, match="valid: forward, reverse_sde, reverse_ode"):
        wgf.velocity_field(get_density("asymmetric"), SDE, 0.3, kind="sideways")
    with pytest.raises(ValueError, match="flow time s must lie in"):
        wgf.vp_time(SDE, 100.0)


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
