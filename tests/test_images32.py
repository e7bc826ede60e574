"""The 32x32 colour image set ``shapes32``: data, 3-channel grids and exports, a tiny CPU training run.

The shapes32 score model is trained on a GPU (scripts/train_gpu.sh); until it is shipped, the Images
page shows a message for the set instead of an error (checked here with AppTest), and with any
3-channel score network it draws colour grids.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from geoflow import images
from geoflow.export import save_image_grid
from geoflow.figures import image_grid
from geoflow.images import SHAPES32_KINDS, class_names, image_shape, load_image_set, render_shapes32
from geoflow.nets import Classifier, UNet
from geoflow.sde import VPSDE
from geoflow.train import (
    TrainConfig,
    classifier_config,
    data_fn_from_tensor,
    image_unet_config,
    train_classifier,
    train_image_score,
    train_projection,
)


# --------------------------------------------------------------------------- data
def test_shapes32_shape_range_and_exact_class_balance():
    assert image_shape("shapes32") == (3, 32, 32)
    assert class_names("shapes32") == SHAPES32_KINDS and len(SHAPES32_KINDS) == 8
    for split, n in images.SHAPES32_N.items():
        x, y = load_image_set("shapes32", split)
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert float(x.min()) == -1.0 and float(x.max()) <= 1.0
        counts = torch.bincount(y, minlength=8)
        assert counts.tolist() == [n // 8] * 8  # exactly balanced in each split
        # colour: the channels differ (a grey set would have equal channels everywhere)
        assert float((x[:, 0] - x[:, 1]).abs().mean()) > 0.05


def test_shapes32_deterministic_and_splits_disjoint():
    x1, y1 = images._shapes32("test")  # uncached regeneration from the seed
    x2, y2 = load_image_set("shapes32", "test")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    xtr, _ = load_image_set("shapes32", "train")
    train_rows = {r.tobytes() for r in xtr.flatten(1).numpy()}
    assert not any(r.tobytes() in train_rows for r in x2.flatten(1).numpy())


def _one(kind: str, period: float = 0.0, radius: float = 9.0, size: int = 32) -> torch.Tensor:
    """One white shape on a black background (plain or striped), upright at the centre."""
    n = 1
    return render_shapes32(
        torch.tensor([SHAPES32_KINDS.index(kind)]),
        torch.full((n, 2), size / 2),
        torch.full((n,), radius),
        torch.zeros(n),
        torch.ones(n, 3),
        torch.tensor([[period, 0.0]]),
        torch.zeros(n, 3),
        torch.zeros(n),
        size=size,
    )


@pytest.mark.parametrize(
    ("kind", "area"),
    [
        ("circle", math.pi),
        ("square", 1.6**2),
        ("ring", math.pi * (1 - 0.55**2)),
        # a regular 5-point star of outer radius 1, inner 0.45: 10 triangles (1, 0.45, 36 degrees)
        ("star", 10 * 0.5 * 0.45 * math.sin(math.pi / 5)),
        ("crescent", None),
        ("heart", None),
    ],
)
def test_rendered_kinds_cover_their_area(kind, area):
    x = _one(kind)
    coverage = float(((x[0, 0] + 1) / 2).sum())
    if area is None:  # no closed form: a shape of substance, smaller than its disk
        assert 0.25 * math.pi * 81 < coverage < math.pi * 81
    else:
        assert coverage == pytest.approx(area * 81, rel=0.03)


def test_kinds_are_distinct_and_stripes_darken():
    masks = torch.stack([_one(k)[0, 0] for k in SHAPES32_KINDS]).flatten(1)
    d = torch.cdist(masks, masks)
    assert float(d[~torch.eye(8, dtype=torch.bool)].min()) > 3.0
    plain, striped = _one("circle"), _one("circle", period=4.0)
    assert float(striped.mean()) < float(plain.mean()) - 0.1


# --------------------------------------------------------------------------- grids and exports in colour
def test_image_grid_and_png_export_in_rgb():
    x = torch.full((5, 3, 4, 4), -1.0)
    x[1, 0] = 1.0  # a red tile
    grid = image_grid(x, nrow=3, scale=2)
    assert grid.shape == (2 * 9 + 1, 3 * 9 + 1, 3) and grid.dtype == np.uint8
    assert tuple(grid[1, 10]) == (255, 0, 0) and tuple(grid[0, 0]) == (128, 128, 128)
    assert image_grid(x[:, :1]).ndim == 2  # grey stays 2-D
    buf = io.BytesIO()
    save_image_grid(x, buf, nrow=3, scale=2)
    img = Image.open(io.BytesIO(buf.getvalue()))
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), grid)
    with pytest.raises(ValueError, match="1 or 3"):
        image_grid(torch.zeros(2, 2, 4, 4))


# --------------------------------------------------------------------------- networks and training
def test_configs_sized_for_shapes32():
    ucfg = image_unet_config("shapes32")
    assert (ucfg.in_ch, ucfg.image_size) == (3, 32)
    ccfg = classifier_config("shapes32")
    assert (ccfg.in_ch, ccfg.n_classes, ccfg.data) == (3, 8, "shapes32")
    x = torch.zeros(2, 3, 32, 32)
    assert UNet(ucfg)(x, torch.full((2,), 0.5)).shape == x.shape
    assert Classifier(ccfg)(x).shape == (2, 8)


def test_tiny_training_on_cpu():
    """A few steps of each trainable kind on shapes32: score model, projection network, classifier."""
    cfg = TrainConfig(steps=2, batch_size=4, seed=0)
    model, summary = train_image_score("shapes32", VPSDE(), cfg)
    assert summary["steps"] == 2 and math.isfinite(summary["loss"])
    assert model.meta == {"data": "shapes32", "shape": [3, 32, 32]}
    x = torch.zeros(2, 3, 32, 32)
    assert model.score(x, torch.full((2,), 0.5)).shape == x.shape
    train, _ = load_image_set("shapes32", "train")
    proj = train_projection(model, data_fn_from_tensor(train), cfg, score_name="shapes32-vp")
    assert proj(x, torch.full((2,), 0.5), torch.full((2,), 0.45)).shape == x.shape
    clf, s = train_classifier("shapes32", steps=2, batch_size=4)
    assert clf.cfg.in_ch == 3 and 0.0 <= s["test_accuracy"] <= 1.0


# --------------------------------------------------------------------------- the Images page
@pytest.mark.xdist_group("app")
def test_images_page_without_a_shipped_model_shows_a_message(monkeypatch):
    pytest.importorskip("streamlit")
    from test_app import run_page

    from geoflow import run as run_api

    monkeypatch.setattr(run_api, "pretrained_available", lambda name: not name.startswith("shapes32"))
    at = run_page("images", **{"images.steps": 3, "images.n": 16, "images.data": "shapes32"})
    assert not at.error, [e.value for e in at.error]
    assert any("shapes32" in i.value and "train_gpu.sh" in i.value for i in at.info)
    assert len(at.get("image")) == 0


@pytest.mark.xdist_group("app")
def test_images_page_draws_colour_grids(monkeypatch):
    """Grid, strips and PCA path from an untrained 3-channel network (what a shipped model would use)."""
    pytest.importorskip("streamlit")
    import streamlit as st
    from test_app import run_page

    from geoflow import run as run_api
    from geoflow.train import make_image_score_model

    model = make_image_score_model("shapes32", VPSDE()).eval()
    monkeypatch.setattr(run_api, "pretrained_available", lambda name: name == "shapes32-vp")
    monkeypatch.setattr(run_api, "pretrained_pair", lambda name: (model, None))
    st.cache_data.clear()
    try:
        at = run_page("images", **{"images.steps": 2, "images.n": 16, "images.data": "shapes32"})
        assert not at.error, [e.value for e in at.error]
        assert len(at.get("image")) >= 4  # the sample grid and three x_t / x0_hat strips
    finally:
        st.cache_data.clear()
