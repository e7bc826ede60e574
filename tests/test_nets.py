"""Raw networks: the image U-Net's config checks and JSON round trip, and the shipped image classifier."""

from __future__ import annotations

import pytest

from geoflow.checkpoints import load_pretrained, pretrained_path, read_manifest, sha256
from geoflow.images import IMAGE_SETS, load_image_set
from geoflow.metrics import accuracy
from geoflow.nets import Classifier, UNet, UNetConfig, build_net, net_config


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


# --------------------------------------------------------------------------- shipped classifier
@pytest.mark.parametrize("name", IMAGE_SETS)
def test_shipped_classifier_loads_verified_and_is_accurate(name):
    entry = read_manifest()[f"{name}-classifier"]
    path = pretrained_path(f"{name}-classifier")
    assert sha256(path) == entry["sha256"] and entry["kind"] == "classifier"
    clf = load_pretrained(f"{name}-classifier", expect_kind="classifier")
    assert isinstance(clf, Classifier) and clf.cfg.data == name
    xt, yt = load_image_set(name, "test")
    acc = accuracy(clf, xt, yt)
    assert acc == pytest.approx(entry["quality"]["test_accuracy"], abs=1e-6)
    assert acc > 0.9
