"""ScoreModel's two output readings ("eps", "edm") and the EDM training loss (geoflow.score, train)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from geoflow.checkpoints import META_KEY, CheckpointError, load_model, save_model
from geoflow.score import ScoreModel
from geoflow.sde import VPSDE
from geoflow.train import (
    TrainConfig,
    data_fn_from_tensor,
    dsm_loss,
    edm_train_times,
    make_score_model_2d,
    train_score,
)


class Zero(nn.Module):
    """A network whose output is 0 everywhere (the EDM denoiser then reduces to c_skip x~)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.w * x


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.3, 0.7, 1.0])
def test_edm_zero_network_is_the_exact_gaussian_score(t):
    """For data N(0, s^2 I) the EDM denoiser is exactly c_skip x~ (F = 0), so the model's score must be
    the marginal's score -x / (alpha^2 s^2 + sigma^2) at every t; the "eps" reading of F = 0 is 0."""
    sde, s_data = VPSDE(), 0.7
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    edm = ScoreModel(Zero().double(), sde, data_std=s_data, param="edm")
    tt = torch.tensor(t, dtype=torch.float64)
    a, s = sde.alpha(tt).item(), sde.sigma(tt).item()
    exact = -x / (a * a * s_data**2 + s * s)
    torch.testing.assert_close(edm.score(x, t), exact, rtol=1e-9, atol=1e-9)
    eps_model = ScoreModel(Zero().double(), sde, data_std=s_data, param="eps")
    assert torch.count_nonzero(eps_model.score(x, t)) == 0


def test_edm_loss_is_the_unit_variance_network_target():
    """dsm_loss of an "edm" model = mean |F - (x0 - c_skip x~) / c_out|^2 / dim, at edm_train_times:
    recomputed here from the definitions with the same random draws."""
    torch.manual_seed(0)
    model = make_score_model_2d(VPSDE(), data_std=1.3, width=16, depth=2)
    model = ScoreModel(model.net.double(), model.sde, data_std=1.3, param="edm")
    x0 = 1.3 * torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = dsm_loss(model, x0, torch.Generator().manual_seed(7))

    g = torch.Generator().manual_seed(7)
    sde = model.sde
    t = edm_train_times(sde, 256, g)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float32).to(torch.float64)
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    x_t = a * x0 + s * z
    st = s / a
    c_skip, c_out = 1.3**2 / (st**2 + 1.3**2), st * 1.3 / torch.sqrt(st**2 + 1.3**2)
    f = model.net(x_t / torch.sqrt(a * a * 1.3**2 + s * s), t)
    target = (x0 - c_skip * x_t / a) / c_out
    want = ((f - target) ** 2).sum(1).mean() / 2
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_edm_train_times_stay_in_range_and_centre_on_edm_noise_levels():
    sde = VPSDE()
    t = edm_train_times(sde, 20000, torch.Generator().manual_seed(0))
    assert float(t.min()) >= sde.t_min and float(t.max()) <= sde.T
    log_sig = torch.log(sde.sigma(t) / sde.alpha(t))
    # 80% N(-1.2, 1.2^2): the median sits near -1.2 (the 20% uniform-in-t part pulls it up a little)
    assert -1.4 < float(log_sig.median()) < -0.6
    # the uniform-in-t share reaches the large noise levels the first sampler steps visit: about
    # 2.5% above sigma~ = e^3, where the log-normal alone would put 0.02%
    assert float((log_sig > 3.0).float().mean()) > 0.015


def test_edm_p_mean_moves_the_training_noise_levels_and_reaches_the_loss():
    """A larger p_mean (scripts/train_images.py --p-mean) trains the high noise levels more often."""
    sde = VPSDE()
    med = {}
    for p_mean in (-1.2, -0.5):
        t = edm_train_times(sde, 20000, torch.Generator().manual_seed(0), p_mean)
        assert float(t.min()) >= sde.t_min and float(t.max()) <= sde.T
        log_sig = torch.log(sde.sigma(t) / sde.alpha(t))
        med[p_mean] = float(log_sig.median())
    # the log-normal part's centre moves by the 0.7 asked for (the uniform share dilutes it a little)
    assert 0.45 < med[-0.5] - med[-1.2] < 0.8
    torch.manual_seed(0)
    base = make_score_model_2d(VPSDE(), data_std=1.0, width=16, depth=2)
    model = ScoreModel(base.net, base.sde, data_std=1.0, param="edm")
    x0 = torch.randn(256, 2)
    with torch.no_grad():
        losses = [float(dsm_loss(model, x0, torch.Generator().manual_seed(7), p)) for p in (-1.2, -0.5)]
    assert losses[0] != losses[1]  # the argument is used, not dropped on the way
    with pytest.raises(ValueError, match="p_mean"):
        train_score(model, data_fn_from_tensor(x0), TrainConfig(steps=1, batch_size=8), p_mean=float("nan"))


def test_param_survives_a_checkpoint_and_an_unknown_one_is_refused(tmp_path):
    torch.manual_seed(0)
    base = make_score_model_2d(VPSDE(), data_std=1.3, width=16, depth=2)
    model = ScoreModel(base.net, base.sde, data_std=1.3, param="edm")
    path = save_model(model, tmp_path / "edm.safetensors")
    back = load_model(path, "score")
    assert back.param == "edm"
    x = torch.randn(8, 2)
    torch.testing.assert_close(back.score(x, 0.2), model.score(x, 0.2))

    cfg = {**model.config(), "param": "v"}
    bad = tmp_path / "bad.safetensors"
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(bad),
        metadata={META_KEY: json.dumps(cfg)},
    )
    with pytest.raises(CheckpointError, match="unknown score parametrization 'v'; valid: eps, edm"):
        load_model(bad)
    with pytest.raises(ValueError, match="valid: eps, edm"):
        ScoreModel(base.net, base.sde, param="x0")


def test_an_eps_models_config_and_fingerprint_are_unchanged_by_param():
    """Shipped projection networks are tied to their score network's fingerprint (config + weights):
    an eps model's config must not gain a key, or every shipped T would stop matching."""
    from geoflow.checkpoints import load_pretrained
    from geoflow.projection import score_fingerprint

    score = load_pretrained("eight_gaussians-vp", "score")
    proj = load_pretrained("eight_gaussians-vp-proj", "projection")
    assert "param" not in score.config()
    assert proj.score_sha256 == score_fingerprint(score)
    proj.check_matches(score)
