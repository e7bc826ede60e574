"""Image sets (data, determinism, rendering), samplers on image batches, and the shipped image score models.

Classifier, Fréchet-distance, training and grid-export tests live in test_nets, test_metrics,
test_train and test_export.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geoflow import images
from geoflow.checkpoints import load_pretrained, read_manifest
from geoflow.images import IMAGE_SETS, SHAPE_KINDS, image_shape, load_image_set, render_shapes
from geoflow.nets import UNet, UNetConfig
from geoflow.samplers import (
    sample_ddim,
    sample_dpm_solver_pp_2m,
    sample_euler_maruyama,
    sample_ode_heun,
    sample_predictor_corrector,
)
from geoflow.score import ScoreModel
from geoflow.sde import VPSDE

SIZES = {"digits": (1437, 360), "shapes": (8000, 2000), "shapes32": (10000, 2000)}


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


# --------------------------------------------------------------------------- samplers on image batches
def _randomize_output(net: UNet, seed: int) -> None:
    # the output conv starts at zero (eps = 0); give it weights so the tests see a real function
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = net.conv_out.weight
        w.copy_(0.1 * torch.randn(w.shape, generator=g))


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


# --------------------------------------------------------------------------- shipped models
@pytest.mark.parametrize("name", IMAGE_SETS)
def test_shipped_score_model_matches_manifest(name):
    if name not in ("digits", "shapes") and f"{name}-vp" not in read_manifest():
        pytest.skip(f"no {name}-vp is shipped (train it with scripts/train_gpu.sh)")
    entry = read_manifest()[f"{name}-vp"]
    model = load_pretrained(f"{name}-vp", expect_kind="score")
    assert model.meta["data"] == name and tuple(model.meta["shape"]) == image_shape(name)
    assert model.sde == VPSDE()
    q = entry["quality"]
    assert q["n_samples"] >= 1000 and entry["floor"] == q["floor"]
    runs = {k: v for k, v in q.items() if isinstance(v, dict) and "frechet" in v}
    assert "euler_maruyama N=1000" in runs  # the reference of method.md section 4
    assert all(math.isfinite(v["frechet"]) and v["frechet"] > q["floor"] for v in runs.values())
    assert q["memorisation"]["memorises"] is False  # a copying model is not shipped
    assert f"train_images.py {name}" in entry["command"] or f"--data {name}" in entry["command"]
