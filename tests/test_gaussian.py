"""Tests of geoflow.gaussian: closed forms against ODE solutions, Monte Carlo, POT, direct minimisation.

Every reference is an oracle: the OU moment ODEs (RK4), a Monte Carlo KL, POT's exact optimal
transport between large samples, and a direct numerical minimisation of the JKO objective.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gaussian_helpers import C0, M0, gauss
from scipy.optimize import minimize

from geoflow import gaussian
from geoflow.metrics import exact_w2
from geoflow.sde import VPSDE

SDE = VPSDE()


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
    me, ce = gaussian.ou_gaussian(M0, C0, SDE, 0.7)
    assert np.abs(me - m).max() < 1e-8
    assert np.abs(ce - c).max() < 1e-8


def test_gaussian_kl_matches_monte_carlo_and_vanishes_on_itself(gen):
    m1, c1 = M0, C0
    m2, c2 = np.array([0.3, 0.2]), np.array([[1.0, 0.3], [0.3, 0.5]])
    p = torch.distributions.MultivariateNormal(torch.tensor(m1), torch.tensor(c1))
    q = torch.distributions.MultivariateNormal(torch.tensor(m2), torch.tensor(c2))
    x = gauss(m1, c1).sample(100000, gen).to(torch.float64)
    mc = float((p.log_prob(x) - q.log_prob(x)).mean())
    kl = gaussian.gaussian_kl(m1, c1, m2, c2)
    assert abs(kl - mc) < 0.03 * max(1.0, kl)
    assert abs(gaussian.gaussian_kl(m1, c1, m1, c1)) < 1e-12
    assert abs(gaussian.free_energy_gaussian(np.zeros(2), np.eye(2))) < 1e-12


def test_bures_w2_matches_pot_on_large_samples(gen):
    m2, c2 = np.array([-1.0, 1.5]), np.array([[0.5, -0.2], [-0.2, 0.8]])
    ref = gaussian.bures_w2(M0, C0, m2, c2)
    # a 1-D check of the formula itself: W2 = sqrt(dm^2 + (sd1 - sd2)^2)
    assert abs(gaussian.bures_w2([0.0], [[4.0]], [1.0], [[1.0]]) - math.sqrt(2.0)) < 1e-12
    x = gauss(M0, C0).sample(1000, gen)
    y = gauss(m2, c2).sample(1000, gen)
    pot = exact_w2(x, y)
    floor = exact_w2(gauss(M0, C0).sample(1000, gen), x)  # finite-sample bias scale
    assert abs(pot - ref) < 0.1 * ref + floor


def test_gaussian_jko_step_closed_form_is_the_minimiser_over_gaussians():
    # direct minimisation of KL(N(m', C') || N(0, I)) + W2^2(N(m', C'), N(m, C)) / 2h over (m', C')
    h = 0.4

    def objective(p):
        m = p[:2]
        lch = np.array([[math.exp(p[2]), 0.0], [p[3], math.exp(p[4])]])
        c = lch @ lch.T
        return gaussian.free_energy_gaussian(m, c) + gaussian.bures_w2(m, c, M0, C0) ** 2 / (2 * h)

    res = minimize(objective, np.array([0.5, -0.2, 0.0, 0.0, 0.0]), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000, "maxfev": 40000})  # fmt: skip
    p = res.x
    lch = np.array([[math.exp(p[2]), 0.0], [p[3], math.exp(p[4])]])
    m_cf, c_cf = gaussian.jko_step_gaussian(M0, C0, h)
    assert np.abs(p[:2] - m_cf).max() < 1e-4
    assert np.abs(lch @ lch.T - c_cf).max() < 1e-4
    # and it is a fixed point at the target
    m_pi, c_pi = gaussian.jko_step_gaussian(np.zeros(2), np.eye(2), h)
    assert np.allclose(m_pi, 0) and np.allclose(c_pi, np.eye(2))
