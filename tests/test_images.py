"""Image sets, the U-Net, the classifier-feature Fréchet distance and the shipped image models."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from geoflow import images
from geoflow.checkpoints import (
    load_model,
    load_pretrained,
    pretrained_path,
    read_manifest,
    save_model,
    sha256,
)
from geoflow.images import (
    IMAGE_SETS,
    SHAPE_KINDS,
    Classifier,
    ClassifierConfig,
    image_quality,
    image_shape,
    load_image_set,
    make_image_score_model,
    render_shapes,
    save_image_grid,
    train_image_score,
)
from geoflow.metrics import frechet_distance, frechet_from_features
from geoflow.nets import UNet, UNetConfig, build_net, net_config
from geoflow.samplers import (
    sample_ddim,
    sample_dpm_solver_pp_2m,
    sample_euler_maruyama,
    sample_ode_heun,
    sample_predictor_corrector,
)
from geoflow.score import ScoreModel
from geoflow.sde import VPSDE
from geoflow.train import TrainConfig

SIZES = {"digits": (1437, 360), "shapes": (8000, 2000)}


# --------------------------------------------------------------------------- data
@pytest.mark.parametrize("name", IMAGE_SETS)
def test_image_sets_shapes_ranges_labels(name):
    shape = image_shape(name)
    for split, n in zip(("train", "test"), SIZES[name], strict=True):
        x, y = load_image_set(name, split)
        assert x.shape == (n, *shape) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        # the background is the dark end of the scale and bright pixels exist
        assert float(x.min()) == -1.0 and float(x.max()) > 0.9
        n_classes = len(images.class_names(name))
        counts = torch.bincount(y, minlength=n_classes)
        assert counts.numel() == n_classes and int(counts.min()) > 0.1 * n / n_classes


def test_load_returns_copies():
    x, _ = load_image_set("digits", "test")
    x.fill_(0.0)
    x2, _ = load_image_set("digits", "test")
    assert float(x2.min()) == -1.0


def test_digits_split_is_a_stratified_partition_of_sklearn_digits():
    from sklearn.datasets import load_digits

    ds = load_digits()
    xtr, ytr = load_image_set("digits", "train")
    xte, yte = load_image_set("digits", "test")
    both = torch.cat([xtr, xte]).flatten(1).numpy()
    full = ds.images.reshape(len(ds.images), -1) / 8.0 - 1.0
    # same multiset of (image, label) rows: the two splits partition the data set
    rows = np.concatenate([both, torch.cat([ytr, yte]).numpy()[:, None]], axis=1)
    ref = np.concatenate([full, ds.target[:, None]], axis=1)
    np.testing.assert_array_equal(rows[np.lexsort(rows.T[::-1])], ref[np.lexsort(ref.T[::-1])])
    # stratified: each class's test share within one image of 20 %
    for k in range(10):
        n_k = int((ds.target == k).sum())
        assert abs(int((yte == k).sum()) - 0.2 * n_k) <= 1


def test_shapes_deterministic_and_splits_disjoint():
    x1, y1 = images._shapes("test")  # uncached regeneration from the seed
    x2, y2 = load_image_set("shapes", "test")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    xtr, _ = load_image_set("shapes", "train")
    train_rows = {r.tobytes() for r in xtr.flatten(1).numpy()}
    assert not any(r.tobytes() in train_rows for r in x2.flatten(1).numpy())
    # anti-aliased: edge pixels take values strictly between background and foreground
    frac_mid = float(((x2 > -0.98) & (x2 < 0.0)).float().mean())
    assert frac_mid > 0.01


@pytest.mark.parametrize(
    ("kind", "area"),
    [
        ("circle", math.pi),
        ("square", 1.6**2),
        ("triangle", 3 * math.sqrt(3) / 4),
        ("cross", 2 * (0.6 * 2) - 0.6**2),
        ("ring", math.pi * (1 - 0.55**2)),
    ],
)
def test_rendered_shape_area_matches_geometry(kind, area):
    # oracle: the summed pixel coverage of an anti-aliased shape is its area (in units of r^2)
    n = 6
    g = torch.Generator().manual_seed(3)
    k = torch.full((n,), SHAPE_KINDS.index(kind))
    r = 4.0 + 2.0 * torch.rand(n, generator=g)
    center = 7.0 + 2.0 * torch.rand(n, 2, generator=g)
    angle = 2 * math.pi * torch.rand(n, generator=g)
    intensity = torch.full((n,), 0.8)
    x = render_shapes(k, center, r, angle, intensity, size=24)
    coverage = ((x + 1) / (2 * 0.8)).sum(dim=(1, 2, 3))
    torch.testing.assert_close(coverage, area * r**2, rtol=0.03, atol=0.0)


def test_bad_names_raise_listing_valid_choices():
    with pytest.raises(ValueError, match="digits, shapes"):
        load_image_set("mnist", "train")
    with pytest.raises(ValueError, match="train, test"):
        load_image_set("digits", "val")
    with pytest.raises(ValueError, match="digits, shapes"):
        make_image_score_model("cifar", VPSDE())
    with pytest.raises(ValueError, match="digits, shapes"):
        images.train_classifier("mnist")
    clf = Classifier(ClassifierConfig(data="digits"))
    with pytest.raises(ValueError, match=r"shape \(n, 1, 8, 8\)"):
        image_quality(torch.zeros(10, 1, 16, 16), "digits", clf)
    with pytest.raises(ValueError, match="NaN"):
        image_quality(torch.full((10, 1, 8, 8), float("nan")), "digits", clf)
    with pytest.raises(ValueError, match="trained on 'digits'"):
        image_quality(torch.zeros(10, 1, 16, 16), "shapes", clf)


# --------------------------------------------------------------------------- networks
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


def test_unet_config_checks_and_json_roundtrip():
    cfg = UNetConfig(image_size=16, base_ch=8, ch_mult=(1, 2, 2), groups=4)
    net = UNet(cfg)
    d = net_config(net)
    d["ch_mult"] = list(d["ch_mult"])  # as it comes back from JSON
    assert build_net(d).cfg == cfg
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(image_size=6, ch_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="groups"):
        UNetConfig(base_ch=12, groups=8)


@pytest.mark.parametrize(
    "sampler",
    [
        sample_euler_maruyama,
        sample_ddim,
        sample_dpm_solver_pp_2m,
        sample_ode_heun,
        sample_predictor_corrector,
    ],
)
def test_samplers_run_on_image_batches(sampler):
    sde = VPSDE()
    net = UNet(UNetConfig(image_size=8, base_ch=8, ch_mult=(1, 2), groups=4, temb_dim=16))
    _randomize_output(net, 5)
    model = ScoreModel(net, sde, data_std=0.75).eval()
    ts = sde.time_grid(4, "uniform")
    outs = []
    for _ in range(2):
        x = sde.prior_sample((3, 1, 8, 8), torch.Generator().manual_seed(0))
        outs.append(sampler(model.score_fn(), sde, x, ts, generator=torch.Generator().manual_seed(1)))
    assert outs[0].shape == (3, 1, 8, 8) and bool(torch.isfinite(outs[0]).all())
    assert torch.equal(outs[0], outs[1])


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
    c1, s1 = images.train_classifier("digits", steps=2, seed=3, batch_size=8)
    c2, s2 = images.train_classifier("digits", steps=2, seed=3, batch_size=8)
    assert s1 == s2 and 0.0 <= s1["test_accuracy"] <= 1.0
    for v1, v2 in zip(c1.state_dict().values(), c2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2)


# --------------------------------------------------------------------------- Fréchet distance
def _bures_sym(m1, c1, m2, c2) -> float:
    # the symmetric form tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), by eigendecompositions only
    w, v = np.linalg.eigh(c1)
    r1 = (v * np.sqrt(w)) @ v.T
    w2 = np.linalg.eigvalsh(r1 @ c2 @ r1)
    return float(
        np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.sum(np.sqrt(np.clip(w2, 0, None)))
    )


def test_frechet_matches_gaussian_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    c1, c2 = a @ a.T / d + 0.1 * np.eye(d), b @ b.T / d + 0.1 * np.eye(d)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    exact = _bures_sym(m1, c1, m2, c2)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(exact, rel=1e-6)
    assert frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-6)
    # sample features: the fitted-Gaussian distance approaches the closed form as n grows
    errs = []
    for n in (500, 50_000):
        f1 = rng.multivariate_normal(m1, c1, size=n)
        f2 = rng.multivariate_normal(m2, c2, size=n)
        errs.append(abs(frechet_from_features(f1, f2) - exact))
    assert errs[1] < 0.03 * exact
    assert errs[1] < errs[0] or errs[0] < 0.03 * exact
    # and through linalg's own matrix square root in the asymmetric form
    covmean = np.real(linalg.sqrtm(c1 @ c2))
    assert exact == pytest.approx(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * covmean), rel=1e-6)


# --------------------------------------------------------------------------- pictures
def test_save_image_grid_png(tmp_path):
    x = torch.full((5, 1, 8, 8), -1.0)
    x[1] = 1.0
    buf = io.BytesIO()
    save_image_grid(x, buf, nrow=3, scale=2)
    img = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    # 2 rows x 3 columns of 16 px tiles with 1 px padding
    assert img.shape == (2 * 17 + 1, 3 * 17 + 1)
    assert img[1, 1] == 0 and img[1, 18] == 255 and img[0, 0] == 128
    save_image_grid(x, tmp_path / "sub" / "g.png")
    assert (tmp_path / "sub" / "g.png").stat().st_size > 0


# --------------------------------------------------------------------------- shipped models
@pytest.mark.parametrize("name", IMAGE_SETS)
def test_shipped_classifier_loads_verified_and_is_accurate(name):
    entry = read_manifest()[f"{name}-classifier"]
    path = pretrained_path(f"{name}-classifier")
    assert sha256(path) == entry["sha256"] and entry["kind"] == "classifier"
    clf = load_pretrained(f"{name}-classifier", expect_kind="classifier")
    assert isinstance(clf, Classifier) and clf.cfg.data == name
    xt, yt = load_image_set(name, "test")
    acc = images.accuracy(clf, xt, yt)
    assert acc == pytest.approx(entry["quality"]["test_accuracy"], abs=1e-6)
    assert acc > 0.9


@pytest.mark.parametrize("name", IMAGE_SETS)
def test_quality_separates_data_from_noise(name):
    clf = load_pretrained(f"{name}-classifier", expect_kind="classifier")
    x, _ = load_image_set(name, "train")
    g = torch.Generator().manual_seed(0)
    real = image_quality(x[:1000], name, clf, generator=g)
    # training images are a draw like the floor's: within the floor's spread over draws
    assert abs(real["frechet"] - real["floor"]) < 4 * real["floor_std"] + 0.1 * real["floor"]
    noise = (0.5 * torch.randn((1000, *image_shape(name)), generator=g)).clamp(-1, 1)
    fake = image_quality(noise, name, clf)
    assert fake["frechet"] > 20 * max(real["frechet"], real["floor"])
    assert sum(real["class_histogram"]) == pytest.approx(1.0, abs=1e-3)
    assert 0 < real["confidence"] <= 1


@pytest.mark.parametrize("name", IMAGE_SETS)
def test_shipped_score_model_matches_manifest(name):
    entry = read_manifest()[f"{name}-vp"]
    model = load_pretrained(f"{name}-vp", expect_kind="score")
    assert model.meta["data"] == name and tuple(model.meta["shape"]) == image_shape(name)
    assert model.sde == VPSDE()
    q = entry["quality"]
    assert q["n_samples"] >= 1000 and entry["floor"] == q["floor"]
    assert f"--data {name}" in entry["command"]
