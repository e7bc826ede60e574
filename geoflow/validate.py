"""One validation layer for everything a user can pass: numbers, names, paths, files, specs, sizes.

Shared by the command line (:mod:`geoflow.cli`), the app and the library. Every limit is written once,
in :class:`Limits` (``LIMITS``); the modules that enforce one import it from here, and ``--help`` and the
UI quote the same numbers. Every check raises :class:`InputError` (a ``ValueError``) whose message
names the input, what is wrong and the valid range or choices, before any work or allocation.

This module imports nothing else from geoflow, so any module may import it.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

GiB = 1 << 30
MiB = 1 << 20


class InputError(ValueError):
    """A value a user passed is invalid; the message names it and what would be valid."""


@dataclass(frozen=True)
class Limits:
    """Every limit on what a user may ask for, in one place (``geoflow <command> --help`` lists them).

    Attributes:
        seed: seeds are integers in ``[0, seed]``.
        sample_steps: sampler steps N per run.
        particles: samples n per run.
        strength: projection strength of the predict-project samplers.
        record_bytes: frames a run records (positions, x0_hat, moves).
        work_bytes: working memory of one network or exact-score evaluation on a batch, estimated
            before the call (an exact mixture score costs n x components x dim).
        train_steps: optimisation steps.
        batch_size: training minibatch size.
        width, depth: the 2-D MLP's hidden width and number of hidden layers.
        params: parameters of a network (training or a checkpoint).
        checkpoint_bytes: size of a checkpoint file.
        lr_max: learning rate (Adam); larger values are refused, smaller ones may still diverge,
            which stops training with a message.
        min_points, max_points: rows of a point-cloud CSV (more are subsampled to ``max_points``).
        components: components of a Gaussian mixture.
        coordinate: largest |coordinate| of data points and mixture means (and sqrt of the largest
            covariance eigenvalue).
        spec_bytes, spec_depth: a JSON mixture spec's size and nesting depth.
        text_bytes: a CSV (or other text input) file's size.
        flow_particles: particles of the JKO path (its blob entropy is O(n^2)).
        min_particles: fewest particles for a blob entropy or a k-NN entropy estimate.
        keyframes: keyframes of ``geoflow flow``.
        jko_steps: JKO steps of one path (fixes the smallest h, ``int_0^T beta / jko_steps``).
        flow_work: n^2 x (JKO steps + 3 keyframes) of one ``geoflow flow`` (about a minute per 1e9).
        projection_grid: the sampling grid N of a ``fixed_N`` projection network.
    """

    seed: int = 2**31 - 1
    sample_steps: int = 5000
    particles: int = 1_000_000
    strength: float = 1000.0
    record_bytes: int = GiB
    work_bytes: int = 2 * GiB
    train_steps: int = 200_000
    batch_size: int = 1 << 20
    width: int = 4096
    depth: int = 64
    params: int = 50_000_000
    checkpoint_bytes: int = GiB
    lr_max: float = 1e12
    min_points: int = 10
    max_points: int = 5000
    components: int = 5000
    coordinate: float = 1e6
    spec_bytes: int = 4 * MiB
    spec_depth: int = 16
    text_bytes: int = 64 * MiB
    flow_particles: int = 5000
    min_particles: int = 10
    keyframes: int = 1000
    jko_steps: int = 5000
    flow_work: float = 5e9
    projection_grid: int = 5000


LIMITS = Limits()

# refused output locations: kernel and device file systems (writes there fail or do harm)
_SPECIAL_DIRS = ("/proc", "/sys", "/dev")


# --------------------------------------------------------------------------- text
def one_line(text: object, limit: int = 400) -> str:
    """``text`` on one line (newlines and runs of spaces collapsed), at most ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3].rstrip() + "..."


def json_type(v: Any) -> str:
    """The JSON name of a parsed value's type (``null``, ``an array``...) for messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list | tuple):
        return "an array"
    return "an object" if isinstance(v, dict) else type(v).__name__


def fmt_bytes(n: float) -> str:
    """A byte count for people: ``1.5 GiB``, ``300 MiB``, ``12 KiB``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


# --------------------------------------------------------------------------- numbers
def _shown(raw: Any) -> str:
    return repr(raw) if isinstance(raw, str) else one_line(raw, 60)


def _num(v: float) -> str:
    return str(int(v)) if isinstance(v, int) or (float(v).is_integer() and abs(v) < 1e15) else f"{v:g}"


def _range(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    left = "(" if lo_open or lo is None else "["
    right = ")" if hi_open or hi is None else "]"
    a = "-inf" if lo is None else _num(lo)
    b = "inf" if hi is None else _num(hi)
    return f"{left}{a}, {b}{right}"


def _to_float(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            return None
    if isinstance(raw, Real):
        try:
            return float(raw)
        except (OverflowError, ValueError):
            return math.inf
    return None


def parse_int(raw: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer in ``[lo, hi]`` from an int or a string (``"20"``, ``"2e3"``).

    Raises:
        InputError: ``"<name> must be an integer in [lo, hi], got <raw>"`` for text, fractions,
            NaN/inf, booleans and out-of-range values (of any size: no overflow).
    """
    msg = f"{name} must be an integer in {_range(lo, hi, False, False)}, got {_shown(raw)}"
    if isinstance(raw, bool):
        raise InputError(msg)
    value: int | None = None
    if isinstance(raw, Integral):
        value = int(raw)
    elif isinstance(raw, str):
        s = raw.strip()
        if re.fullmatch(r"[+-]?\d{1,30}", s):
            value = int(s)
        else:
            f = _to_float(s)
            if f is not None and math.isfinite(f) and f == int(f) and abs(f) < 1e30:
                value = int(f)
    elif isinstance(raw, Real):
        f = _to_float(raw)
        if f is not None and math.isfinite(f) and f == int(f):
            value = int(f)
    if value is None or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(msg)
    return value


def parse_float(
    raw: Any,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """A finite number in the range ``[lo, hi]`` (ends open where asked) from a number or a string.

    Raises:
        InputError: ``"<name> must be a finite number in <range>, got <raw>"``.
    """
    f = _to_float(raw)
    ok = f is not None and math.isfinite(f)
    if ok and lo is not None:
        ok = f > lo if lo_open else f >= lo
    if ok and hi is not None:
        ok = f < hi if hi_open else f <= hi
    if not ok:
        raise InputError(
            f"{name} must be a finite number in {_range(lo, hi, lo_open, hi_open)}, got {_shown(raw)}"
        )
    return float(f)  # type: ignore[arg-type]


def check_seed(raw: Any, name: str = "seed") -> int:
    """A seed: an integer in ``[0, LIMITS.seed]``."""
    return parse_int(raw, name, 0, LIMITS.seed)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``; else ``"unknown <name> <value>; valid: a, b, c"``."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise InputError(f"unknown {name} {_shown(value)}; valid: {', '.join(options)}")
    return value


# --------------------------------------------------------------------------- paths and files
def check_output_path(path: str | Path, suffixes: Sequence[str], flag: str = "--out") -> Path:
    """An output file that can be written, checked before any work.

    Its extension must be one of ``suffixes`` (``".npy"``...); it must not be an existing
    directory, nor under a file, nor under /proc, /sys or /dev; the nearest existing directory
    above it must accept a new file (probed by creating and removing an empty temporary file).

    Returns:
        the path (parents are created when the file is written).
    """
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        want = " or ".join(suffixes) if len(suffixes) <= 2 else ", ".join(suffixes)
        raise InputError(f"{flag} must end in {want}, got {p.name or str(path)!r}")
    full = Path(os.path.abspath(p))
    if any(str(full) == d or str(full).startswith(d + "/") for d in _SPECIAL_DIRS):
        raise InputError(f"{flag} {str(path)!r} is under a system directory; choose a normal folder")
    if full.is_dir():
        raise InputError(f"{flag} {str(path)!r} is an existing directory, not a file")
    parent = full.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {str(path)!r} cannot be created: {str(parent)!r} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".geoflow-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(
            f"{flag} {str(path)!r} is not writable ({e.strerror or type(e).__name__} in {str(parent)!r})"
        ) from None
    return p


def check_input_file(path: str | Path, what: str, max_bytes: int | None = None) -> Path:
    """An existing regular file of at most ``max_bytes`` (``what`` names it in messages)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {str(path)!r} does not exist")
    if p.is_dir():
        raise InputError(f"{what} {str(path)!r} is a directory, not a file")
    if not p.is_file():
        raise InputError(f"{what} {str(path)!r} is not a regular file")
    size = p.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise InputError(f"{what} {str(path)!r} is {size:,} bytes; the limit is {fmt_bytes(max_bytes)}")
    return p


def decode_text(raw: bytes, what: str) -> str:
    """Decode uploaded or read text: UTF-8 (optionally with a BOM) or UTF-16/32 with a BOM.

    Raises:
        InputError: naming ``what`` and the first undecodable byte.
    """
    boms = (
        (b"\xff\xfe\x00\x00", "utf-32-le"),
        (b"\x00\x00\xfe\xff", "utf-32-be"),
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    )
    for bom, codec in boms:
        if raw.startswith(bom):
            try:
                return raw[len(bom) :].decode(codec.replace("-sig", ""))
            except UnicodeDecodeError as e:
                raise InputError(f"{what} is not valid {codec} text (bad byte at {e.start})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{what} is not UTF-8 text (byte 0x{raw[e.start]:02x} at position {e.start}); save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise InputError(f"{what} contains NUL bytes (binary data, or UTF-16 without a byte-order mark)")
    return text


def read_text_file(path: str | Path, what: str, max_bytes: int = LIMITS.text_bytes) -> str:
    """The text of a user's file, size-checked and decoded (see :func:`decode_text`)."""
    p = check_input_file(path, what, max_bytes)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise InputError(f"{what} {str(path)!r} cannot be read ({e.strerror or type(e).__name__})") from None
    return decode_text(raw, f"{what} {str(path)!r}")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """Deepest nesting of ``[]``/``{}`` in JSON text (strings skipped), without parsing it."""
    depth = best = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        best = max(best, depth)
    return best


def load_json(
    text: str | bytes,
    what: str,
    max_bytes: int = LIMITS.spec_bytes,
    max_depth: int = LIMITS.spec_depth,
) -> Any:
    """Parse JSON text of bounded size and depth (no RecursionError, no huge-integer stalls).

    Raises:
        InputError: too large, too deep, not UTF-8, or not valid JSON (with the position).
    """
    if isinstance(text, bytes | bytearray):
        text = decode_text(bytes(text), what)
    if len(text) > max_bytes:
        raise InputError(f"{what} is {fmt_bytes(len(text))}; the limit is {fmt_bytes(max_bytes)}")
    depth = json_depth(text)
    if depth > max_depth:
        raise InputError(f"{what} is nested {depth} levels deep; the limit is {max_depth}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{what} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits
        why = "a number has too many digits" if "digits" in str(e) else one_line(e, 120)
        raise InputError(f"{what} is not usable JSON ({why})") from None


# --------------------------------------------------------------------------- sizes and work
def exact_score_bytes(n: int, components: int, dim: int) -> int:
    """Working memory of one exact mixture score call on n points (float64 (n, K, d) temporaries)."""
    return 8 * 5 * int(n) * int(components) * int(dim)


def check_exact_score(n: int, components: int, dim: int) -> None:
    """Refuse an exact-score run whose per-call workspace exceeds ``LIMITS.work_bytes``."""
    need = exact_score_bytes(n, components, dim)
    if need > LIMITS.work_bytes:
        most = max(1, LIMITS.work_bytes // exact_score_bytes(1, components, dim))
        raise InputError(
            f"the exact score of a {components}-component mixture on {n} samples needs about "
            f"{fmt_bytes(need)} of memory per step (limit {fmt_bytes(LIMITS.work_bytes)}); "
            f"use at most {most} samples (--n) or fewer components"
        )


_NET_FIELDS: dict[str, dict[str, tuple[int, int]]] = {
    "mlp": {"dim": (1, 64), "width": (1, LIMITS.width), "depth": (1, LIMITS.depth), "temb_dim": (1, 4096)},
    "unet": {
        "in_ch": (1, 16),
        "image_size": (1, 512),
        "base_ch": (1, 1024),
        "n_res": (1, 16),
        "temb_dim": (1, 4096),
        "groups": (1, 1024),
    },
    "classifier": {
        "in_ch": (1, 16),
        "n_classes": (1, 10_000),
        "width": (1, 1024),
        "feat_dim": (1, 8192),
    },
}


def check_net_config(cfg: Any, what: str = "network config") -> dict:
    """Types and ranges of a network config dict (``kind`` mlp, unet or classifier), before building.

    Unknown fields are left to the network's own constructor. Returns ``cfg``.
    """
    if not isinstance(cfg, dict):
        raise InputError(f"{what} must be a JSON object, got {json_type(cfg)}")
    kind = cfg.get("kind", "mlp")
    check_choice(kind, f"{what} kind", _NET_FIELDS)
    for key, (lo, hi) in _NET_FIELDS[kind].items():
        v = cfg.get(key, lo)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise InputError(f"{what} {key} must be an integer in [{lo}, {hi}], got {_shown(v)}")
    if kind == "unet" and "ch_mult" in cfg:
        mult = cfg["ch_mult"]
        if (
            not isinstance(mult, list | tuple)
            or not 1 <= len(mult) <= 6
            or not all(isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= 16 for m in mult)
        ):
            raise InputError(f"{what} ch_mult must be 1 to 6 integers in [1, 16], got {_shown(mult)}")
    if kind == "classifier" and "data" in cfg and not isinstance(cfg["data"], str):
        raise InputError(f"{what} data must be a string, got {_shown(cfg['data'])}")
    return cfg


def mlp_params(dim: int, width: int, depth: int, temb_dim: int = 32) -> int:
    """Parameters of :class:`geoflow.nets.MLP` (``depth`` hidden layers of ``width``)."""
    first = (dim + temb_dim) * width + width
    return first + (depth - 1) * (width * width + width) + width * dim + dim


def net_activation_floats(cfg: dict, training: bool) -> int:
    """A coarse estimate of the floats one sample keeps alive in a forward (and backward) pass."""
    kind = cfg.get("kind", "mlp")
    if kind == "mlp":
        width, depth = int(cfg.get("width", 128)), int(cfg.get("depth", 3))
        # training keeps each layer's input, pre- and post-activation (and their gradients)
        return width * (4 * depth if training else 3) + 4 * int(cfg.get("temb_dim", 32))
    if kind == "unet":
        size, base = int(cfg.get("image_size", 8)), int(cfg.get("base_ch", 32))
        n_res = int(cfg.get("n_res", 1))
        total = 0
        for i, m in enumerate(cfg.get("ch_mult", (1, 2))):
            total += (size // 2**i) ** 2 * base * int(m) * (2 * n_res + 2)
        return total * (6 if training else 2)
    width = int(cfg.get("width", 32))
    size = 32 * 32
    return size * width * (8 if training else 3)


def check_work(floats_per_sample: int, n: int, what: str, flag: str = "--n", overhead: int = 0) -> None:
    """Refuse when ``4 * floats_per_sample * n + overhead`` bytes exceed ``LIMITS.work_bytes``."""
    need = 4 * int(floats_per_sample) * int(n) + int(overhead)
    if need > LIMITS.work_bytes:
        room = max(0, LIMITS.work_bytes - overhead) // max(1, 4 * floats_per_sample)
        raise InputError(
            f"{what} would need about {fmt_bytes(need)} of memory (limit {fmt_bytes(LIMITS.work_bytes)}); "
            f"lower {flag} to at most {room}"
            if room >= 1
            else f"{what} would need about {fmt_bytes(need)} of memory (limit "
            f"{fmt_bytes(LIMITS.work_bytes)}); use a smaller network"
        )


def check_mlp_training(width: int, depth: int, batch_size: int, dim: int = 2) -> int:
    """Refuse a 2-D MLP training whose parameters or memory exceed the limits; returns the parameter count."""
    parse_int(width, "width", 1, LIMITS.width)
    parse_int(depth, "depth", 1, LIMITS.depth)
    parse_int(batch_size, "batch size", 1, LIMITS.batch_size)
    params = mlp_params(dim, width, depth)
    if params > LIMITS.params:
        raise InputError(
            f"an MLP of width {width} and depth {depth} has {params:,} parameters "
            f"(limit {LIMITS.params:,}); use a smaller --width or --depth"
        )
    # weights, gradients, Adam's two moments and the EMA copy: 5 float32 copies of the parameters
    acts = net_activation_floats({"kind": "mlp", "width": width, "depth": depth}, training=True)
    check_work(acts, batch_size, f"training width {width} x depth {depth} at batch size {batch_size}",
               "--batch-size", overhead=20 * params)  # fmt: skip
    return params


def check_flow(n: int, keyframes: int, h: float, s_max: float) -> int:
    """Ranges of ``geoflow flow``'s inputs and its work estimate; returns the number of JKO steps.

    ``h`` is a step of the flow time ``s = int beta`` in ``[s_max / LIMITS.jko_steps, s_max]``.
    """
    parse_int(n, "n", LIMITS.min_particles, LIMITS.flow_particles)
    parse_int(keyframes, "keyframes", 2, LIMITS.keyframes)
    h_min = s_max / LIMITS.jko_steps
    f = _to_float(h)
    if f is None or not math.isfinite(f) or not 0 < f <= s_max or f < h_min:
        raise InputError(
            f"h must be a number in (0, {s_max:.4g}] (a step of s = int beta), at least {h_min:.3g} "
            f"(at most {LIMITS.jko_steps} JKO steps), got {_shown(h)}"
        )
    steps = math.ceil(s_max / f) + keyframes
    work = float(n) ** 2 * (steps + 3 * keyframes)
    if work > LIMITS.flow_work:
        raise InputError(
            f"this flow needs about {steps} JKO steps and {3 * keyframes} W2 solves on {n} particles "
            f"(work n^2 x {steps + 3 * keyframes} = {work:.3g}, limit {LIMITS.flow_work:.3g}); "
            "raise --h or lower --n or --keyframes"
        )
    return steps


def check_device(name: Any) -> str:
    """A torch device that exists here (``cpu``, ``cuda``, ``cuda:N``, ``mps``); errors list them."""
    import torch  # here: the rest of this module needs no torch

    available = ["cpu"]
    if torch.cuda.is_available():
        available += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        available.append("mps")
    if not isinstance(name, str):
        raise InputError(f"device must be a string; available: {', '.join(available)}")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {name!r}; available: {', '.join(available)}") from None
    if dev.type == "cpu":
        return name
    cuda_ok = dev.type == "cuda" and torch.cuda.is_available()
    if name in available or (cuda_ok and (dev.index is None or dev.index < torch.cuda.device_count())):
        return name
    why = "CUDA is not available here" if dev.type == "cuda" else f"device {name!r} is not available"
    raise InputError(f"{why}; available: {', '.join(available)}")
