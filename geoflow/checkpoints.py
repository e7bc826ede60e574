"""Checkpoints: safetensors state dicts with the model's config JSON in the file metadata.

Never pickle, never download. ``load_pretrained(name)`` rebuilds a ready model from ``pretrained/``
alone and checks its sha256 against ``pretrained/MANIFEST.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError as SafetensorsError
from safetensors.torch import load_file, save_file
from torch import nn

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
MANIFEST = PRETRAINED_DIR / "MANIFEST.json"
META_KEY = "geoflow_config"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match what it claims to be."""


def _builders() -> dict[str, Callable[[dict], nn.Module]]:
    # imported here: the model modules import this one for saving
    from geoflow.score import ScoreModel

    kinds: dict[str, Callable[[dict], nn.Module]] = {"score": ScoreModel.from_config}
    try:
        from geoflow.projection import ProjectionModel

        kinds["projection"] = ProjectionModel.from_config
    except ImportError:  # pragma: no cover - optional module
        pass
    try:
        from geoflow.nets import Classifier

        kinds["classifier"] = Classifier.from_config
    except ImportError:  # pragma: no cover - optional module
        pass
    return kinds


def save_model(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.state_dict()`` and ``model.config()`` (+ ``extra``) to a safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.config()  # type: ignore[operator]
    if extra:
        cfg = {**cfg, "extra": extra}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={META_KEY: json.dumps(cfg)})
    return path


def read_config(path: str | Path) -> dict:
    """The config JSON stored in a checkpoint's metadata."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorsError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({e})") from None
    if META_KEY not in meta:
        raise CheckpointError(f"{path.name} has no geoflow config in its metadata")
    try:
        return json.loads(meta[META_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path.name}: config metadata is not valid JSON ({e})") from None


def load_model(path: str | Path, expect_kind: str | None = None) -> nn.Module:
    """Rebuild a model from a checkpoint file; eval mode, no grad needed.

    Raises:
        CheckpointError: missing/corrupt file, unknown kind, or weights that do not fit the config.
    """
    cfg = read_config(path)
    kind = cfg.get("kind")
    builders = _builders()
    if kind not in builders:
        raise CheckpointError(f"{Path(path).name}: unknown model kind {kind!r}; valid: {', '.join(builders)}")
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(f"{Path(path).name} holds a {kind} model, expected a {expect_kind} model")
    try:
        model = builders[kind](cfg)
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except (SafetensorsError, RuntimeError, ValueError, KeyError, TypeError) as e:
        msg = str(e).splitlines()[0][:300]
        raise CheckpointError(f"{Path(path).name}: weights do not match the stored config ({msg})") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest() -> dict[str, dict]:
    """``{name: entry}`` from ``pretrained/MANIFEST.json`` (empty if absent)."""
    if not MANIFEST.exists():
        return {}
    return json.loads(MANIFEST.read_text())["models"]


def write_manifest_entry(name: str, entry: dict) -> None:
    """Add or replace one manifest entry (keys sorted, stable diff)."""
    models = read_manifest()
    models[name] = entry
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_text(json.dumps({"models": dict(sorted(models.items()))}, indent=2) + "\n")


def pretrained_names(kind: str | None = None) -> tuple[str, ...]:
    """Names in the manifest, optionally only those of one kind (score, projection, classifier)."""
    return tuple(n for n, e in read_manifest().items() if kind is None or e.get("kind") == kind)


def pretrained_path(name: str, verify: bool = True) -> Path:
    """Path of a shipped model; checks the sha256 against the manifest."""
    models = read_manifest()
    if name not in models:
        raise CheckpointError(f"no pretrained model {name!r}; valid: {', '.join(models) or '(none shipped)'}")
    path = PRETRAINED_DIR / models[name]["file"]
    if not path.exists():
        raise CheckpointError(f"pretrained file {path.name} listed in the manifest is missing")
    if verify and sha256(path) != models[name]["sha256"]:
        raise CheckpointError(f"pretrained file {path.name} does not match its manifest sha256 (corrupt?)")
    return path


def load_pretrained(name: str, expect_kind: str | None = None) -> nn.Module:
    """Load a shipped model by manifest name (e.g. ``"eight_gaussians-vp"``), verified."""
    return load_model(pretrained_path(name), expect_kind=expect_kind)
