"""Peer cross-check: geoflow's DDIM, DPM-Solver++(2M) and UniPC against diffusers' schedulers.

The same epsilon network, the same initial noise and the same alpha/sigma grid go through
geoflow's pure-function sampler and through the diffusers scheduler loop
(``eps = model(x, t); x = scheduler.step(eps, t, x).prev_sample``); every intermediate state
must agree. diffusers is a pinned test-only dependency (requirements-dev.txt), imported directly:
this module fails, it does not skip, when diffusers is missing. No hub access: the schedulers are
built from arguments.

What is aligned, and how:

* **Schedule.** geoflow's own ``VPSDE()`` on a discrete grid of 1000 training steps,
  ``t(n) = t_min + n (T - t_min) / 999``: diffusers' ``alphas_cumprod[n] = alpha(t(n))^2``, through
  ``trained_betas = 1 - alphas_cumprod[n] / alphas_cumprod[n - 1]``. diffusers stores betas and
  sigmas in float32, so after ``set_timesteps`` the test puts the float64 values back
  (``alphas_cumprod`` for DDIM, ``sigmas`` for the multistep schedulers; checked first to equal
  diffusers' float32 ones to float32 precision): both sides then use the same float64 grid.
* **Network.** The exact score of ``three_component`` under that VPSDE; diffusers sees
  ``eps(x, n) = -sigma(t(n)) score(x, t(n))``, geoflow ``score(x, t(n))``.
* **Grid.** geoflow runs on ``ts = t(scheduler.timesteps)`` followed by ``t(0) = t_min``.
* **Last step.** geoflow's ``final_denoise=True`` (the last step is Tweedie's x0_hat at t_{N-1})
  is diffusers' ``final_sigmas_type="zero"`` for the multistep schedulers (a first-order step to
  sigma = 0 returns x0_hat) and ``set_alpha_to_one=True`` for DDIM. ``final_denoise=False`` (a
  last step to t_min) is ``final_sigmas_type="sigma_min"`` and ``set_alpha_to_one=False``
  (``alphas_cumprod[0]`` is alpha(t_min)^2).
* **Order of the last step.** ``lower_order_final``: geoflow's DPM-Solver++(2M) stays second order
  on its last step, so DPM runs with ``lower_order_final=False`` (diffusers otherwise drops to first
  order below 15 steps); geoflow's UniPC follows the UniPC reference (first order, no corrector, on
  the last step), which is diffusers' default. Both only matter without the final denoising step.
* **DDIM spacing.** diffusers' DDIM always steps from t to ``t - 1000 // N``, whatever
  ``timestep_spacing`` says. That is the next of its own timesteps for ``"leading"`` (and for
  ``"trailing"`` when N divides 1000), but not for the default ``"linspace"``: there the sample is
  moved to one noise level and the network is then told another one
  (:func:`test_diffusers_ddim_linspace_is_off_its_own_grid`). geoflow's DDIM steps between
  consecutive grid times, which is what DDIM's derivation asks for: the disagreement is diffusers'
  (its open issue 12633). diffusers' DDIM default is ``"leading"``, which matches.

Tolerances: DDIM and UniPC run in float64 on both sides and agree to 1e-12 (measured 8e-15). diffusers'
``DPMSolverMultistepScheduler.step`` casts the sample to float32 ("upcast", a downcast for float64
input), so DPM-Solver++ agrees to float32 precision: 1e-5 (measured 2e-6).
"""

from __future__ import annotations

import math
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from geoflow.densities import get_density
from geoflow.samplers import sample_ddim, sample_dpm_solver_pp_2m, sample_unipc
from geoflow.sde import VPSDE

K = 1000  # diffusers' num_train_timesteps
SDE_ = VPSDE()
MIX = get_density("three_component")
SCORE = MIX.score_fn(SDE_)
T_OF_N = SDE_.t_min + torch.arange(K, dtype=torch.float64) * (SDE_.T - SDE_.t_min) / (K - 1)
ALPHAS_CUMPROD = SDE_.alpha(T_OF_N) ** 2
BETAS = 1.0 - ALPHAS_CUMPROD / torch.cat([torch.ones(1, dtype=torch.float64), ALPHAS_CUMPROD[:-1]])
TOL_FLOAT64 = 1e-12
TOL_DPM = 1e-5


def test_diffusers_is_the_pinned_version():
    pins = (Path(__file__).resolve().parents[1] / "requirements-dev.txt").read_text().split()
    assert f"diffusers=={diffusers.__version__}" in pins


def _eps_model(x: torch.Tensor, n: torch.Tensor | int) -> torch.Tensor:
    """diffusers' side of the network: the exact mixture score as an epsilon prediction."""
    t = T_OF_N[int(n)].expand(x.shape[0])
    return -SDE_.sigma(t)[:, None] * SCORE(x, t)


def _x_init(b: int = 256) -> torch.Tensor:
    return SDE_.prior_sample((b, 2), torch.Generator().manual_seed(0), dtype=torch.float64)


def _geoflow_grid(timesteps: torch.Tensor) -> torch.Tensor:
    return torch.cat([T_OF_N[timesteps.long()], T_OF_N[:1]])


def _run_geoflow(fn, timesteps: torch.Tensor, x: torch.Tensor, final_denoise: bool) -> list[torch.Tensor]:
    states: list[torch.Tensor] = []
    fn(
        SCORE,
        SDE_,
        x,
        _geoflow_grid(timesteps),
        final_denoise=final_denoise,
        callback=lambda d: states.append(d["x"]),
    )
    return states


def _run_diffusers(scheduler, x: torch.Tensor) -> list[torch.Tensor]:
    states = []
    for n in scheduler.timesteps:
        x = scheduler.step(_eps_model(x, n), n, x).prev_sample
        states.append(x)
    return states


def _float64_sigmas(scheduler, final_zero: bool) -> None:
    """Put diffusers' float32 sigma grid back to the float64 values it rounds (checked first)."""
    ac = ALPHAS_CUMPROD[scheduler.timesteps.long()]
    last = (
        torch.zeros(1, dtype=torch.float64)
        if final_zero
        else ((1 - ALPHAS_CUMPROD[:1]) / ALPHAS_CUMPROD[:1]).sqrt()
    )
    sigmas = torch.cat([((1 - ac) / ac).sqrt(), last])
    assert scheduler.sigmas.dtype == torch.float32
    # float32 cumprod: 1 - alphas_cumprod near n = 0 keeps only ~3-4 digits
    assert torch.allclose(scheduler.sigmas.double(), sigmas, rtol=1e-3, atol=0)
    scheduler.sigmas = sigmas


def _ddim(spacing: str, n_steps: int, final_denoise: bool) -> DDIMScheduler:
    sch = DDIMScheduler(
        num_train_timesteps=K,
        trained_betas=BETAS.numpy(),
        clip_sample=False,
        set_alpha_to_one=final_denoise,
        steps_offset=1 if spacing == "leading" else 0,
        timestep_spacing=spacing,
        prediction_type="epsilon",
    )
    sch.set_timesteps(n_steps)
    assert torch.allclose(sch.alphas_cumprod.double(), ALPHAS_CUMPROD, rtol=1e-5, atol=0)
    sch.alphas_cumprod = ALPHAS_CUMPROD.clone()
    sch.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if final_denoise else ALPHAS_CUMPROD[0]
    return sch


def _dpm(n_steps: int, final_denoise: bool) -> DPMSolverMultistepScheduler:
    sch = DPMSolverMultistepScheduler(
        num_train_timesteps=K,
        trained_betas=BETAS.numpy(),
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=False,
        euler_at_final=False,
        final_sigmas_type="zero" if final_denoise else "sigma_min",
        prediction_type="epsilon",
    )
    sch.set_timesteps(n_steps)
    _float64_sigmas(sch, final_denoise)
    return sch


def _unipc(n_steps: int, final_denoise: bool, spacing: str = "linspace") -> UniPCMultistepScheduler:
    sch = UniPCMultistepScheduler(
        num_train_timesteps=K,
        trained_betas=BETAS.numpy(),
        solver_order=2,
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        disable_corrector=[],
        final_sigmas_type="zero" if final_denoise else "sigma_min",
        timestep_spacing=spacing,
        prediction_type="epsilon",
    )
    sch.set_timesteps(n_steps)
    _float64_sigmas(sch, final_denoise)
    return sch


def _assert_same_trajectory(ours: list[torch.Tensor], theirs: list[torch.Tensor], tol: float) -> float:
    assert len(ours) == len(theirs)
    err = max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True))
    assert err < tol, f"max |geoflow - diffusers| = {err:.3g} over the trajectory (tolerance {tol:g})"
    return err


# --------------------------------------------------------------------------- the cross-checks
@pytest.mark.parametrize("final_denoise", [True, False], ids=["denoise", "no_denoise"])
@pytest.mark.parametrize(("spacing", "n_steps"), [("leading", 10), ("leading", 7), ("trailing", 20)])
def test_ddim_matches_diffusers(spacing, n_steps, final_denoise):
    x = _x_init()
    sch = _ddim(spacing, n_steps, final_denoise)
    ours = _run_geoflow(sample_ddim, sch.timesteps, x, final_denoise)
    _assert_same_trajectory(ours, _run_diffusers(sch, x), TOL_FLOAT64)


@pytest.mark.parametrize("final_denoise", [True, False], ids=["denoise", "no_denoise"])
@pytest.mark.parametrize("n_steps", [5, 10, 20])
def test_dpm_solver_pp_2m_matches_diffusers(n_steps, final_denoise):
    x = _x_init()
    sch = _dpm(n_steps, final_denoise)
    ours = _run_geoflow(sample_dpm_solver_pp_2m, sch.timesteps, x, final_denoise)
    _assert_same_trajectory(ours, _run_diffusers(sch, x), TOL_DPM)


@pytest.mark.parametrize("final_denoise", [True, False], ids=["denoise", "no_denoise"])
@pytest.mark.parametrize(("spacing", "n_steps"), [("linspace", 5), ("linspace", 10), ("trailing", 20)])
def test_unipc_matches_diffusers(spacing, n_steps, final_denoise):
    x = _x_init()
    sch = _unipc(n_steps, final_denoise, spacing)
    ours = _run_geoflow(sample_unipc, sch.timesteps, x, final_denoise)
    _assert_same_trajectory(ours, _run_diffusers(sch, x), TOL_FLOAT64)


def test_unipc_corrector_is_what_differs_from_dpm_solver_pp():
    """UniP-2 with bh2 is DPM-Solver++(2M)'s step: with the corrector disabled at every step
    (and DPM's last step made first order as UniPC's), diffusers' UniPC is geoflow's DPM-Solver++."""
    n_steps = 10
    x = _x_init()
    sch = _unipc(n_steps, final_denoise=False)
    sch.disable_corrector = list(range(n_steps))
    theirs = _run_diffusers(sch, x)
    ours = _run_geoflow(sample_dpm_solver_pp_2m, sch.timesteps, x, final_denoise=False)
    _assert_same_trajectory(ours[:-1], theirs[:-1], TOL_FLOAT64)
    # ... and with it on, the trajectories part (the corrector does something)
    with_corrector = _run_geoflow(sample_unipc, sch.timesteps, x, final_denoise=False)
    assert float((with_corrector[-1] - ours[-1]).abs().max()) > 1e-3


def test_diffusers_ddim_linspace_is_off_its_own_grid():
    """Under "linspace" diffusers' DDIM moves the sample to ``t - 1000 // N``, not to its next
    timestep, so geoflow (consecutive grid times) and diffusers disagree far outside the
    tolerance; under "leading" both are the same grid (the cross-check above)."""
    n_steps = 10
    sch = _ddim("linspace", n_steps, final_denoise=True)
    ts = sch.timesteps
    assert not torch.equal(ts[:-1] - K // n_steps, ts[1:])
    x = _x_init()
    assert int(ts[-1]) == 0  # its last step starts at t(0) = t_min: geoflow's grid ends below it
    grid = torch.cat([T_OF_N[ts.long()], T_OF_N[:1] / 2])
    ours: list[torch.Tensor] = []
    sample_ddim(SCORE, SDE_, x, grid, callback=lambda d: ours.append(d["x"]))
    err = float((ours[-2] - _run_diffusers(sch, x)[-2]).abs().max())
    assert err > 1e-3
    # the leading grid is consistent
    lead = _ddim("leading", n_steps, final_denoise=True).timesteps
    assert torch.equal(lead[:-1] - K // n_steps, lead[1:])


def test_the_grids_are_the_same_schedule():
    """The discrete schedule is geoflow's VPSDE: diffusers' float32 alphas_cumprod equal alpha(t(n))^2."""
    sch = UniPCMultistepScheduler(num_train_timesteps=K, trained_betas=BETAS.numpy())
    assert np.allclose(sch.alphas_cumprod.double().numpy(), ALPHAS_CUMPROD.numpy(), rtol=1e-5, atol=0)
    assert math.isclose(float(T_OF_N[0]), SDE_.t_min) and math.isclose(float(T_OF_N[-1]), SDE_.T)
