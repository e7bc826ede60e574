"""Predict-project (method.md section 3): loss optimum, training-free projection, samplers, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pp_helpers import assert_zero_strength_is_euler_maruyama

from geoflow.checkpoints import load_model, save_model
from geoflow.densities import get_density
from geoflow.nets import MLP, MLPConfig, UNet, UNetConfig
from geoflow.predict_project import (
    DEFAULT_STRENGTHS,
    sample_predict_project,
    sample_predict_project_ancestral,
    sample_predict_project_langevin,
)
from geoflow.projection import (
    PROJECTION_KINDS,
    LearnedProjection,
    ProjectionModel,
    TweedieProjection,
    make_projection,
    shrink_factor,
)
from geoflow.registry import SAMPLERS, sample
from geoflow.run import RunSpec, exact_source, model_source, resolve_projection
from geoflow.samplers import sample_ddim, sample_euler_maruyama
from geoflow.score import ScoreModel
from geoflow.sde import VPSDE, append_dims
from geoflow.train import TrainConfig, new_projection_model, train_projection

SDE_ = VPSDE()
PP_SAMPLERS = (
    "predict_project",
    "predict_project_ancestral",
    "predict_project_langevin",
    "predict_project_renoise",
)

# An anisotropic Gaussian target: everything about it is closed form.
M0 = torch.tensor([0.8, -0.4], dtype=torch.float64)
C0 = torch.tensor([[0.5, 0.2], [0.2, 0.15]], dtype=torch.float64)


class GaussianScore(ScoreModel):
    """A ScoreModel whose score is the exact score of N(M0, C0) under the SDE (the net is unused)."""

    def score(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])
        a, s = self.sde.alpha(t), self.sde.sigma(t)
        cov = a[:, None, None] ** 2 * C0 + s[:, None, None] ** 2 * torch.eye(2, dtype=torch.float64)
        r = x.double() - a[:, None] * M0
        return -torch.linalg.solve(cov, r.unsqueeze(-1)).squeeze(-1).to(x.dtype)


def gaussian_score_model(width: int = 64, depth: int = 2) -> GaussianScore:
    return GaussianScore(MLP(MLPConfig(dim=2, width=width, depth=depth)), SDE_, data_std=0.6)


def optimum_closed_form(t: float, t_next: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``T*(x) = (2/(2+c))(E[a(t') x0 | x_pred = x] - x)`` for the Gaussian target, as (K, mean, cov, f).

    x_pred = M x_t + k is linear in x_t (exact linear score), so (x0, x_pred) is jointly Gaussian and
    E[x0 | x_pred] = m + a C M^T V^{-1} (x_pred - E x_pred). Returns the gain ``K = a C M^T V^{-1}``,
    ``E x_pred``, ``V = Var(x_pred)`` and the factor ``f = 2/(2+c)``.
    """
    m, c0 = M0.numpy(), C0.numpy()
    a, s = float(SDE_.alpha(t)), float(SDE_.sigma(t))
    b, dt = float(SDE_.beta(t)), t - t_next
    p = np.linalg.inv(a * a * c0 + s * s * np.eye(2))
    mm = (1 + b * dt) * np.eye(2) - 2 * b * dt * p
    k = 2 * b * dt * p @ (a * m)
    v = mm @ (a * a * c0 + s * s * np.eye(2)) @ mm.T
    gain = a * c0 @ mm.T @ np.linalg.inv(v)
    return gain, mm @ (a * m) + k, v, 2.0 / (2.0 + math.sqrt(b))


def test_learned_projection_reaches_the_closed_form_optimum():
    """A briefly trained T (fixed_N) approaches T* of method.md section 3 at every grid step.

    Measured as the excess loss ``(1 + c/2) E||T - T*||^2`` (the loss is quadratic in T) relative to
    the loss of doing nothing, ``E||x_pred - a(t') x_0||^2``, on exact samples of (x_0, x_pred).
    """
    torch.manual_seed(0)  # the untrained net's initial weights only
    score = gaussian_score_model()
    n_steps = 10
    chol = torch.linalg.cholesky(C0)

    def data(n: int, g: torch.Generator) -> torch.Tensor:
        return (M0 + torch.randn(n, 2, generator=g, dtype=torch.float64) @ chol.T).float()

    proj0 = new_projection_model(score, "fixed_N", n_steps)
    proj = train_projection(
        score, data, TrainConfig(steps=1000, batch_size=512, lr=3e-3, ema=0.99, seed=0), "fixed_N", n_steps
    )
    ts = SDE_.time_grid(n_steps, "uniform")
    g = torch.Generator().manual_seed(7)
    n = 20000
    for i in range(n_steps):
        t, t_next = float(ts[i]), float(ts[i + 1])
        gain, mean, _, f = optimum_closed_form(t, t_next)
        x0 = data(n, g).double()
        x_t = SDE_.marginal_sample(x0, t, g)
        tb, tn = torch.full((n,), t, dtype=torch.float64), torch.full((n,), t_next, dtype=torch.float64)
        x_pred = x_t + float(SDE_.beta(t)) * (2 * score.score(x_t, tb) + x_t) * (t - t_next)
        xp = x_pred.numpy()
        a2 = float(SDE_.alpha(t_next))
        target = f * (a2 * (M0.numpy() + (xp - mean) @ gain.T) - xp)
        with torch.no_grad():
            got = proj(x_pred.float(), tb, tn).double().numpy()
            start = proj0(x_pred.float(), tb, tn).double().numpy()
        null = np.mean(np.sum((xp - a2 * x0.numpy()) ** 2, 1))
        w = 1 + 0.5 * math.sqrt(float(SDE_.beta(t)))
        excess = w * np.mean(np.sum((got - target) ** 2, 1)) / null
        excess0 = w * np.mean(np.sum((start - target) ** 2, 1)) / null
        assert excess < 0.05, f"step {i}: excess loss {excess:.3g} of the trained T over T*"
        assert excess < excess0, (
            f"step {i}: training did not move T toward T* ({excess0:.3g} -> {excess:.3g})"
        )


def test_tweedie_projection_matches_method_formula(gen):
    """T(x) = (2/(2+c)) s(t')^2 score(x, t'), c = sqrt(beta(t)) with the paper's beta."""
    mix = get_density("three_component")
    sf = mix.score_fn(SDE_)
    proj = make_projection("exact", score_fn=sf, sde=SDE_)
    x = torch.randn(64, 2, generator=gen)
    t = torch.full((64,), 0.6, dtype=torch.float64)
    tn = torch.full((64,), 0.55, dtype=torch.float64)
    beta = 0.05 + (10.0 - 0.05) * 0.6  # the paper's beta(t), computed here independently of the SDE code
    sig2 = 1.0 - math.exp(-2 * (0.05 * 0.55 + 0.5 * (10.0 - 0.05) * 0.55**2))
    expected = (2.0 / (2.0 + math.sqrt(beta))) * sig2 * sf(x, tn)
    torch.testing.assert_close(proj(x, t, tn), expected, rtol=1e-5, atol=1e-6)
    # and it is 2/(2+c) times the move to Tweedie's kernel mean a(t') x0_hat(x, t')
    a2 = float(SDE_.alpha(0.55))
    x0_hat = (x + sig2 * sf(x, tn)) / a2
    torch.testing.assert_close(
        proj(x, t, tn) / (2.0 / (2.0 + math.sqrt(beta))), a2 * x0_hat - x, atol=1e-5, rtol=1e-5
    )


def test_warm_started_network_is_the_scaled_tweedie_projection(gen):
    """With the score network's weights, T_theta is s(t)/s(t') times the training-free projection."""
    score = ScoreModel(MLP(MLPConfig(dim=2, width=32, depth=2)), SDE_, data_std=1.3)
    proj = new_projection_model(score)
    x = torch.randn(32, 2, generator=gen)
    t = torch.full((32,), 0.3, dtype=torch.float64)
    tn = torch.full((32,), 0.25, dtype=torch.float64)
    tw = TweedieProjection(score.score_fn(), SDE_)
    ratio = float(SDE_.sigma(0.3) / SDE_.sigma(0.25))
    with torch.no_grad():
        torch.testing.assert_close(proj(x, t, tn), ratio * tw(x, t, tn), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("final_denoise", [True, False])
def test_zero_strength_is_euler_maruyama_step_for_step(final_denoise):
    mix = get_density("asymmetric")
    sf = mix.score_fn(SDE_)
    out_em, out_pp, ts = assert_zero_strength_is_euler_maruyama(
        sample_predict_project, sf, SDE_, final_denoise
    )
    if not final_denoise:
        # the paper adds no noise after its last step; Euler-Maruyama does: they differ by exactly that
        assert not torch.equal(out_em, out_pp)
        gap = (out_em - out_pp).std().item()
        b = 0.5 * float(SDE_.diffusion(ts[-2])) ** 2
        expected = math.sqrt(2 * b * float(ts[-2] - ts[-1]))
        assert 0.8 * expected < gap < 1.2 * expected


def test_ancestral_variant_at_zero_strength_is_ddpm():
    """predict_project_ancestral with strength 0 is the DDPM ancestral step (DDIM, eta = 1)."""
    mix = get_density("three_component")
    sf = mix.score_fn(SDE_)
    x = SDE_.prior_sample((300, 2), torch.Generator().manual_seed(4))
    ts = SDE_.time_grid(15, "logsnr")
    a = sample_ddim(sf, SDE_, x, ts, eta=1.0, generator=torch.Generator().manual_seed(5))
    b = sample_predict_project_ancestral(
        sf, SDE_, x, ts, strength=0.0, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_langevin_variant_at_zero_strength_is_euler_maruyama():
    mix = get_density("three_component")
    sf = mix.score_fn(SDE_)
    x = SDE_.prior_sample((300, 2), torch.Generator().manual_seed(4))
    ts = SDE_.time_grid(15)
    a = sample_euler_maruyama(sf, SDE_, x, ts, generator=torch.Generator().manual_seed(5))
    b = sample_predict_project_langevin(
        sf, SDE_, x, ts, strength=0.0, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_projection_moves_toward_the_kernel_mean():
    """With the exact score, a projection step reduces the distance of x_pred to the true kernel mean."""
    mix = get_density("eight_gaussians")
    sf = mix.score_fn(SDE_)
    x0 = mix.sample(2000, torch.Generator().manual_seed(1)).float()
    t, tn = 0.3, 0.25
    x_t = SDE_.marginal_sample(x0, t, torch.Generator().manual_seed(2))
    b = float(SDE_.beta(t))
    tb = torch.full((2000,), t, dtype=torch.float64)
    x_pred = x_t + b * (2 * sf(x_t, tb) + x_t) * (t - tn)
    proj = make_projection("exact", score_fn=sf, sde=SDE_)
    x_proj = x_pred + proj(x_pred, tb, torch.full((2000,), tn, dtype=torch.float64))
    x_full = x_pred + (x_proj - x_pred) / (2.0 / (2.0 + math.sqrt(b)))  # Tweedie's kernel mean itself
    mean = float(SDE_.alpha(tn)) * x0
    before = ((x_pred - mean) ** 2).sum(1).mean()
    after = ((x_proj - mean) ** 2).sum(1).mean()
    full = ((x_full - mean) ** 2).sum(1).mean()
    # the conditional mean is the least-squares estimate: the closer to it, the smaller the error
    assert full < after < before


def _tiny_image_score() -> ScoreModel:
    net = UNet(UNetConfig(in_ch=1, image_size=8, base_ch=8, ch_mult=(1, 2), temb_dim=16, groups=4))
    return ScoreModel(net, SDE_, data_std=0.5)


@pytest.mark.parametrize("name", PP_SAMPLERS)
@pytest.mark.parametrize("final_denoise", [True, False])
def test_image_shaped_runs_and_nfe(name, final_denoise):
    torch.manual_seed(0)  # weights of the untrained tiny net only; sampling uses explicit generators
    score = _tiny_image_score()
    x = SDE_.prior_sample((3, 1, 8, 8), torch.Generator().manual_seed(0))
    ts = SDE_.time_grid(4)
    kw = {}
    if name != "predict_project_langevin":
        kw["project"] = make_projection(
            "learned", score_fn=score.score_fn(), sde=SDE_, model=new_projection_model(score)
        )
    steps: list[dict] = []
    out = sample(
        name,
        score.score_fn(),
        SDE_,
        x,
        ts,
        final_denoise=final_denoise,
        callback=steps.append,
        generator=torch.Generator().manual_seed(1),
        **kw,
    )
    assert out.shape == (3, 1, 8, 8) and torch.isfinite(out).all()
    assert len(steps) == 4
    assert steps[-1]["nfe"] == SAMPLERS[name].nfe(4, final_denoise) == (7 if final_denoise else 8)
    projected = steps[:-1] if final_denoise else steps
    assert all("x_pred" in d and "x_proj" in d and d["x_proj"].shape == x.shape for d in projected)


@pytest.mark.parametrize("name", PP_SAMPLERS)
def test_deterministic_under_a_fixed_generator(name):
    sf = get_density("eight_gaussians").score_fn(SDE_)
    x = SDE_.prior_sample((100, 2), torch.Generator().manual_seed(0))
    ts = SDE_.time_grid(6)
    a = sample(name, sf, SDE_, x, ts, generator=torch.Generator().manual_seed(2))
    b = sample(name, sf, SDE_, x, ts, generator=torch.Generator().manual_seed(2))
    c = sample(name, sf, SDE_, x, ts, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_checkpoint_roundtrip_and_mismatched_score_network(tmp_path, gen):
    torch.manual_seed(0)
    score_a = ScoreModel(MLP(MLPConfig(dim=2, width=16, depth=2)), SDE_)
    score_b = ScoreModel(MLP(MLPConfig(dim=2, width=16, depth=2)), SDE_)  # other weights
    proj = new_projection_model(score_a, score_name="a-vp")
    path = save_model(proj, tmp_path / "a-vp-proj.safetensors")
    loaded = load_model(path, expect_kind="projection")
    assert isinstance(loaded, ProjectionModel) and loaded.config() == proj.config()
    x = torch.randn(8, 2, generator=gen)
    t, tn = torch.full((8,), 0.5, dtype=torch.float64), torch.full((8,), 0.4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, tn), proj(x, t, tn))
    loaded.check_matches(score_a)
    with pytest.raises(ValueError, match="does not match"):
        loaded.check_matches(score_b)
    with pytest.raises(ValueError, match="SDE"):
        loaded.check_matches(ScoreModel(MLP(MLPConfig(dim=2, width=16, depth=2)), VPSDE(beta_max=5.0)))


def test_bad_arguments_are_value_errors():
    sf = get_density("eight_gaussians").score_fn(SDE_)
    with pytest.raises(ValueError, match="valid: " + ", ".join(PROJECTION_KINDS)):
        make_projection("nope", score_fn=sf, sde=SDE_)
    with pytest.raises(ValueError, match="learned projection needs"):
        make_projection("learned", score_fn=sf, sde=SDE_)
    score = gaussian_score_model(8, 1)
    with pytest.raises(ValueError, match="random_dt, fixed_N"):
        train_projection(score, lambda n, g: torch.zeros(n, 2), TrainConfig(steps=1), mode="sometimes")
    with pytest.raises(ValueError, match="n_steps"):
        train_projection(score, lambda n, g: torch.zeros(n, 2), TrainConfig(steps=1), mode="fixed_N")
    x = SDE_.prior_sample((4, 2), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="strength"):
        sample_predict_project(sf, SDE_, x, SDE_.time_grid(3), strength=-1.0)


def test_shrink_factor_uses_the_papers_beta():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    expected = 2.0 / (2.0 + torch.sqrt(SDE_.beta(t)))
    torch.testing.assert_close(shrink_factor(SDE_, t), expected)
    assert append_dims(t, 3).shape == (3, 1, 1)


# --------------------------------------------------------------------------- CLI
def test_resolve_projection_defaults_and_errors():
    """The run API's T: auto picks exact for an exact score, learned where a network exists."""
    mix = get_density("eight_gaussians")
    src = exact_source(mix, SDE_, "eight_gaussians")
    spec = RunSpec(data="eight_gaussians", score="exact", sampler="predict_project")
    proj = resolve_projection(spec, src)
    assert isinstance(proj, TweedieProjection)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    t, tn = torch.full((5,), 0.5, dtype=torch.float64), torch.full((5,), 0.45, dtype=torch.float64)
    torch.testing.assert_close(
        proj(x, t, tn), make_projection("exact", score_fn=mix.score_fn(SDE_), sde=SDE_)(x, t, tn)
    )
    assert spec.effective_strength() == DEFAULT_STRENGTHS["predict_project"]
    langevin = RunSpec(data="eight_gaussians", sampler="predict_project_langevin")
    assert resolve_projection(langevin, src) is None
    assert langevin.effective_strength() == DEFAULT_STRENGTHS["predict_project_langevin"]
    with pytest.raises(ValueError, match="valid: auto, learned, tweedie, exact"):
        RunSpec(sampler="predict_project", projection="bogus").validate()
    with pytest.raises(ValueError, match="no learned projection network"):
        resolve_projection(RunSpec(sampler="predict_project", projection="learned"), src)
    with pytest.raises(ValueError, match="strength"):
        RunSpec(sampler="predict_project", strength=-1.0).validate()
    torch.manual_seed(0)
    score_a = ScoreModel(MLP(MLPConfig(dim=2, width=16, depth=2)), SDE_, meta={"data": "eight_gaussians"})
    score_b = ScoreModel(MLP(MLPConfig(dim=2, width=16, depth=2)), SDE_, meta={"data": "eight_gaussians"})
    proj_a = new_projection_model(score_a, score_name="a")
    src_a = model_source(score_a, "a", "a", proj_a, mix)
    learned = RunSpec(sampler="predict_project", projection="learned")
    assert isinstance(resolve_projection(learned, src_a), LearnedProjection)
    assert isinstance(resolve_projection(RunSpec(sampler="predict_project"), src_a), LearnedProjection)
    with pytest.raises(ValueError, match="does not match"):
        model_source(score_b, "b", "b", proj_a, mix)
    exact = RunSpec(sampler="predict_project", projection="exact")
    assert isinstance(resolve_projection(exact, src_a), TweedieProjection)


def test_train_projection_cli(tmp_path, capsys):
    from geoflow.cli import main

    torch.manual_seed(0)
    score = ScoreModel(MLP(MLPConfig(dim=2, width=16, depth=2)), SDE_, meta={"data": "eight_gaussians"})
    score_path = save_model(score, tmp_path / "s.safetensors")
    out = tmp_path / "s-proj.safetensors"
    argv = ["train-projection", "--density", "eight_gaussians", "--score", str(score_path), "--steps", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    proj = load_model(out, expect_kind="projection")
    proj.check_matches(score)
    assert proj.train_mode == "random_dt"
    assert main([*argv, "--mode", "fixed_N", "--n-steps", "10", "--out", str(out)]) == 0
    assert load_model(out).n_steps == 10
    assert main([*argv, "--mode", "sometimes", "--out", str(out)]) == 2
    assert main(["train-projection", "--density", "nope", "--steps", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "valid: random_dt, fixed_N" in err and "unknown density 'nope'" in err
