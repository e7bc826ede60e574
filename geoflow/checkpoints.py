"""Checkpoints: safetensors state dicts with the model's config JSON in the file metadata.

Never pickle, never download. ``load_pretrained(name)`` rebuilds a ready model from ``pretrained/``
alone and checks its sha256 against ``pretrained/MANIFEST.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError as SafetensorsError
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from geoflow.atomic import atomic_write
from geoflow.score import PARAMS as SCORE_PARAMS
from geoflow.validate import LIMITS, InputError, check_net_config, fmt_bytes, json_type, load_json, one_line

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
    """Write ``model.state_dict()`` and ``model.config()`` (+ ``extra``) to a safetensors file.

    Atomic (:func:`geoflow.atomic.atomic_write`): a killed process or a full disk never leaves a
    half-written checkpoint at ``path``.
    """
    cfg = model.config()  # type: ignore[operator]
    if extra:
        cfg = {**cfg, "extra": extra}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, safetensors_bytes(state, metadata={META_KEY: json.dumps(cfg)}))


def _read_header(path: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """``(metadata, {tensor name: shape})`` from the file's header, without reading the weights."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a file")
    size = path.stat().st_size
    if size > LIMITS.checkpoint_bytes:
        raise CheckpointError(
            f"{path.name} is {fmt_bytes(size)}; the limit is {fmt_bytes(LIMITS.checkpoint_bytes)}"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorsError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path.name} is not a readable safetensors file ({one_line(e, 200)})"
        ) from None
    return meta, shapes


def read_config(path: str | Path) -> dict:
    """The config JSON stored in a checkpoint's metadata (a JSON object, size and depth bounded)."""
    path = Path(path)
    meta, _ = _read_header(path)
    return _parse_config(meta, path.name)


def _parse_config(meta: dict, name: str) -> dict:
    if META_KEY not in meta:
        raise CheckpointError(f"{name} has no geoflow config in its metadata")
    try:
        cfg = load_json(meta[META_KEY], f"{name}'s config metadata", max_bytes=1 << 20)
    except InputError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{name}: its config metadata must be a JSON object, got {json_type(cfg)}")
    return cfg


def _finite_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_config(cfg: dict, name: str = "checkpoint") -> None:
    """Types and ranges of a checkpoint's config, before any network is built.

    Raises:
        CheckpointError: naming the field, what it holds and what is valid.
    """
    kind = cfg.get("kind")
    builders = _builders()
    if kind not in builders:
        raise CheckpointError(f"{name}: unknown model kind {kind!r}; valid: {', '.join(builders)}")
    try:
        if kind == "classifier":
            check_net_config(
                {**{k: v for k, v in cfg.items() if k != "extra"}, "kind": "classifier"}, "config"
            )
            return
        missing = [k for k in ("net", "sde") if k not in cfg]
        if missing:
            raise CheckpointError(f"{name}: the {kind} config is incomplete (lacks {', '.join(missing)})")
        check_net_config(cfg["net"], "network config")
    except InputError as e:
        raise CheckpointError(f"{name}: {e}") from None
    sde = cfg["sde"]
    if not isinstance(sde, dict) or sde.get("type") not in ("vp", "ve"):
        raise CheckpointError(
            f"{name}: its SDE config must be an object with type vp or ve, got {one_line(sde, 80)}"
        )
    bad = [k for k, v in sde.items() if k not in ("type", "name") and not _finite_number(v)]
    if bad:
        raise CheckpointError(f"{name}: SDE parameter {bad[0]} must be a finite number, got {sde[bad[0]]!r}")
    std = cfg.get("data_std", 1.0)
    if not (_finite_number(std) and 0 < std <= LIMITS.coordinate):
        raise CheckpointError(
            f"{name}: data_std must be a finite number in (0, {LIMITS.coordinate:g}], got {std!r}"
        )
    meta = cfg.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise CheckpointError(f"{name}: meta must be a JSON object or null, got {json_type(meta)}")
    shape = (meta or {}).get("shape")
    if shape is not None:
        ok = isinstance(shape, list) and 1 <= len(shape) <= 3
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in shape)
        if not ok:
            raise CheckpointError(f"{name}: meta shape must be 1 to 3 integers in [1, 4096], got {shape!r}")
        net = cfg["net"]
        want = (
            [net.get("in_ch", 1), net.get("image_size", 8), net.get("image_size", 8)]
            if net.get("kind", "mlp") == "unet"
            else [net.get("dim", 2)]
        )
        if list(shape) != want:
            raise CheckpointError(
                f"{name}: meta shape {shape} does not match its network (input shape {want})"
            )
    if kind == "score" and cfg.get("param", "eps") not in SCORE_PARAMS:
        raise CheckpointError(
            f"{name}: unknown score parametrization {cfg['param']!r}; valid: {', '.join(SCORE_PARAMS)}"
        )
    if kind == "projection":
        n = cfg.get("n_steps")
        if n is not None and not (
            isinstance(n, int) and not isinstance(n, bool) and 2 <= n <= LIMITS.projection_grid
        ):
            raise CheckpointError(
                f"{name}: n_steps must be null or an integer in [2, {LIMITS.projection_grid}]"
            )
        for key in ("score_sha256", "score_name", "train_mode"):
            if cfg.get(key) is not None and not isinstance(cfg[key], str):
                raise CheckpointError(f"{name}: {key} must be a string or null, got {cfg[key]!r}")


def _shape_mismatch(want: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]]) -> str:
    """One readable line on how the file's tensors differ from what the config builds (empty: none)."""
    problems = [f"missing {k}" for k in want if k not in got]
    problems += [f"unexpected {k}" for k in got if k not in want]
    problems += [
        f"{k} is {list(got[k])} in the file, {list(want[k])} in the config"
        for k in want
        if k in got and tuple(got[k]) != tuple(want[k])
    ]
    if not problems:
        return ""
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def load_model(path: str | Path, expect_kind: str | None = None) -> nn.Module:
    """Rebuild a model from a checkpoint file; eval mode, no grad needed.

    Before any network is built: the file's size, its config's types and ranges, and the tensor
    shapes the config implies (built on torch's ``meta`` device, which allocates nothing) against
    the shapes in the file's header. After loading, the weights must be finite.

    Raises:
        CheckpointError: missing/corrupt file, unknown kind, invalid config, or weights that do not
            fit the config.
    """
    path = Path(path)
    name = path.name
    meta, shapes = _read_header(path)
    cfg = _parse_config(meta, name)
    check_config(cfg, name)
    kind = cfg["kind"]
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(f"{name} holds a {kind} model, expected a {expect_kind} model")
    build = _builders()[kind]
    try:
        with torch.device("meta"):
            skeleton = build(cfg)
        want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(
            f"{name}: the stored config is incomplete or invalid ({one_line(e, 200)})"
        ) from None
    n_params = sum(math.prod(s) for s in want.values())
    if n_params > LIMITS.params:
        raise CheckpointError(
            f"{name}: its config describes {n_params:,} parameters (limit {LIMITS.params:,})"
        )
    mismatch = _shape_mismatch(want, shapes)
    if mismatch:
        raise CheckpointError(f"{name}: weights do not match the stored config ({mismatch})")
    try:
        model = build(cfg)
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        model.load_state_dict(state, strict=True)
    except (SafetensorsError, OSError, RuntimeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{name}: weights do not match the stored config ({one_line(e, 300)})"
        ) from None
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        raise CheckpointError(f"{name} holds NaN or infinite weights")
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
    text = json.dumps({"models": dict(sorted(models.items()))}, indent=2) + "\n"
    atomic_write(MANIFEST, text.encode())


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
