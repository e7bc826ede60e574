"""Checkpoints: safetensors round trip, clear errors for broken files, and every shipped model.

The manifest tests are parametrized over ``pretrained/MANIFEST.json`` as it is at collection
time; a separate test requires a score model ``<density>-vp`` for every named 2-D density.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import geoflow.checkpoints as ck
from geoflow.checkpoints import (
    META_KEY,
    CheckpointError,
    load_model,
    load_pretrained,
    read_config,
    read_manifest,
    save_model,
    sha256,
    write_manifest_entry,
)
from geoflow.densities import DENSITY_NAMES
from geoflow.score import ScoreModel
from geoflow.sde import VESDE, VPSDE
from geoflow.train import make_score_model_2d

MANIFEST_AT_COLLECTION = read_manifest()


def _model(sde=None, width: int = 16, seed: int = 0) -> ScoreModel:
    with torch.random.fork_rng():  # a fixed random init without touching the global RNG
        torch.manual_seed(seed)
        return make_score_model_2d(
            sde or VPSDE(), data_std=1.3, width=width, depth=2, meta={"density": "test"}
        )


def _outputs(model: ScoreModel) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.99 + 0.01
    with torch.no_grad():
        return torch.cat([model.score(x, t), model.x0(x, t)], 1)


# --------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_max=5.0)], ids=lambda s: s.name)
def test_round_trip_gives_identical_outputs(tmp_path, sde):
    model = _model(sde)
    path = save_model(model, tmp_path / "sub" / "m.safetensors", extra={"note": "hello"})
    loaded = load_model(path, expect_kind="score")
    assert isinstance(loaded, ScoreModel)
    assert loaded.sde == sde and loaded.data_std == pytest.approx(1.3) and loaded.meta == {"density": "test"}
    assert torch.equal(_outputs(loaded), _outputs(model))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    cfg = read_config(path)
    assert cfg["kind"] == "score" and cfg["extra"] == {"note": "hello"}
    # never a pickle: a safetensors file starts with its 8-byte header length and a JSON header
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + n])["__metadata__"][META_KEY]


def test_expect_kind_mismatch(tmp_path):
    path = save_model(_model(), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="holds a score model, expected a projection model"):
        load_model(path, expect_kind="projection")


# --------------------------------------------------------------------------- broken files
def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "header_only"])
def test_corrupt_files_raise_checkpoint_error(tmp_path, damage):
    path = save_model(_model(), tmp_path / "m.safetensors")
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "random":
        path.write_bytes(os.urandom(len(raw)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        n = int.from_bytes(raw[:8], "little")
        path.write_bytes(raw[: 8 + n])  # the header survives, the tensor data is gone
    with pytest.raises(CheckpointError, match="m.safetensors"):
        load_model(path)
    assert issubclass(CheckpointError, ValueError)


def test_file_without_config_metadata(tmp_path):
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in _model().state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="no geoflow config"):
        load_model(path)


def test_config_weights_mismatch(tmp_path):
    """Weights of a width-16 network under the config of a width-32 one."""
    path = tmp_path / "mismatch.safetensors"
    state = {k: v.contiguous() for k, v in _model(width=16).state_dict().items()}
    save_file(state, str(path), metadata={META_KEY: json.dumps(_model(width=32).config())})
    with pytest.raises(CheckpointError, match="weights do not match the stored config"):
        load_model(path)


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"kind": "teapot"}), "unknown model kind 'teapot'; valid: score"),
        (json.dumps({"kind": "score", "net": {"kind": "mlp"}}), "do not match|incomplete"),
    ],
)
def test_bad_config_metadata(tmp_path, meta, match):
    path = tmp_path / "bad.safetensors"
    save_file(
        {k: v.contiguous() for k, v in _model().state_dict().items()}, str(path), metadata={META_KEY: meta}
    )
    with pytest.raises(CheckpointError, match=match):
        load_model(path)


# --------------------------------------------------------------------------- pretrained lookup
def test_load_pretrained_unknown_name_lists_valid_names():
    with pytest.raises(CheckpointError) as e:
        load_pretrained("no_such_model-vp")
    for name in read_manifest():
        assert name in str(e.value)


def test_pretrained_lookup_verifies_the_hash(tmp_path, monkeypatch):
    """Against a private manifest: a tampered or missing file is refused with a clear message."""
    monkeypatch.setattr(ck, "PRETRAINED_DIR", tmp_path)
    monkeypatch.setattr(ck, "MANIFEST", tmp_path / "MANIFEST.json")
    model = _model()
    path = save_model(model, tmp_path / "toy-vp.safetensors")
    write_manifest_entry("toy-vp", {"kind": "score", "file": path.name, "sha256": sha256(path)})
    assert torch.equal(_outputs(load_pretrained("toy-vp", expect_kind="score")), _outputs(model))
    assert ck.pretrained_names("score") == ("toy-vp",) and ck.pretrained_names("classifier") == ()
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_pretrained("toy-vp")
    path.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_pretrained("toy-vp")


# --------------------------------------------------------------------------- the shipped models
def test_manifest_exists_with_a_score_model_for_every_density():
    assert ck.MANIFEST.exists(), "pretrained/MANIFEST.json is missing"
    models = read_manifest()
    assert models, "the manifest lists no models"
    missing = [f"{n}-vp" for n in DENSITY_NAMES if models.get(f"{n}-vp", {}).get("kind") != "score"]
    assert not missing, f"no shipped score model for: {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(MANIFEST_AT_COLLECTION))
def test_every_manifest_entry_loads_and_matches_its_hash(name):
    entry = MANIFEST_AT_COLLECTION[name]
    for key in ("kind", "file", "sha256", "command", "quality", "floor"):
        assert key in entry, f"{name}: manifest entry lacks {key!r}"
    path = ck.PRETRAINED_DIR / entry["file"]
    assert path.exists(), f"{name}: {entry['file']} is missing"
    assert sha256(path) == entry["sha256"], f"{name}: sha256 mismatch"
    model = load_pretrained(name, expect_kind=entry["kind"])
    assert read_config(path)["kind"] == entry["kind"]
    assert not model.training
    if entry["kind"] == "score":
        assert isinstance(model, ScoreModel)
    if entry["kind"] == "score" and name.removesuffix("-vp") in DENSITY_NAMES:
        assert model.sde.name == "vp"
        out = model.score(
            torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), torch.full((4,), 0.5)
        )
        assert out.shape == (4, 2) and torch.isfinite(out).all()
