"""A compact wire form of a plotly figure: its arrays in one binary body, positions as int16.

A Flows animation is almost all numbers (1000 particles x 2 coordinates x every frame). As plotly
JSON they are float32 base64 strings inside JSON text: 4 bytes a number and a third more for base64,
decoded twice in the browser (the text, then plotly's base64). Packed, the figure is::

    b"GFP1" | header length (uint32, little-endian) | header (UTF-8 JSON) | zero pad to 4 | body

The header is the figure's plotly JSON with every typed array replaced by a reference
``{"gf": [offset, count, code, lo, step]}`` (plus ``"shape"`` for a 2-D array) into the body, each
array starting on a multiple of 4 bytes. Codes:

- ``"q2"``: int16, value = lo + step * (q + 32767); q = -32768 marks a NaN or inf (plotly's line
  break). lo is the array's smallest finite value and step = (max - min) / 65534, so a value is off
  by at most step / 2: 1/131068 of that array's own span (about 6e-5 for particles spread over 8
  units, well under 0.01 pixel on a 600-pixel panel). Only arrays of trace data with at least
  :data:`MIN_QUANTISED` numbers, on linear axes, are quantised.
- ``"f4"``: float32 as it was: arrays on a log axis (a fixed absolute error would erase small values),
  short arrays, and arrays outside the traces.
- ``"u1"``: uint8 as it was (the exact marginal's mass levels).

``app/live_plot/index.html`` decodes it in the browser; :func:`unpack_figure` is the same decoder in
Python (tests and benchmarks read what the browser receives through it).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.io as pio

MAGIC = b"GFP1"
MIN_QUANTISED = 64  # shorter arrays stay float32: nothing to gain, and cursors keep their exact value
_Q_NAN = -32768
_Q_OFFSET = 32767
_Q_LEVELS = 65534  # q + 32767 runs over 0..65534
_CODES = {"f4": np.dtype("<f4"), "u1": np.dtype("u1"), "q2": np.dtype("<i2")}


def quantise(a: np.ndarray) -> tuple[np.ndarray, float, float]:
    """An array as int16 levels on its own finite range: ``(q, lo, step)``.

    Args:
        a: any shape, float; NaN and inf are kept as the mark q = -32768.

    Returns:
        q (a.size,) int16 with a ~= lo + step * (q + 32767), and |a - that| <= step / 2 where finite;
        step = (max - min) / 65534 over the finite values (0 for a constant array, which is exact).
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    finite = np.isfinite(x)
    every = bool(finite.all())
    vals = x if every else x[finite]
    if not vals.size:
        return np.full(x.shape, _Q_NAN, dtype="<i2"), 0.0, 0.0
    lo, hi = float(vals.min()), float(vals.max())
    step = (hi - lo) / _Q_LEVELS
    if not (step > 0 and np.isfinite(step)):  # a constant array (or a span beyond float64): all lo
        step, levels = 0.0, np.zeros(vals.shape)
    else:
        levels = np.rint((vals - lo) * (1.0 / step))
    levels = np.clip(levels, 0, _Q_LEVELS, out=levels) - _Q_OFFSET
    if every:
        return levels.astype("<i2"), lo, step
    q = np.full(x.shape, _Q_NAN, dtype="<i2")
    q[finite] = levels
    return q, lo, step


def dequantise(q: np.ndarray, lo: float, step: float) -> np.ndarray:
    """Inverse of :func:`quantise` as float32 (the browser computes the same numbers), shape of q."""
    q = np.asarray(q)
    out = (lo + step * (q.astype(np.float64) + _Q_OFFSET)).astype(np.float32)
    out[q == _Q_NAN] = np.nan
    return out


def _spec_array(v: dict[str, Any]) -> np.ndarray:
    """The array a plotly typed-array spec (``dtype``, base64 ``bdata``, optional ``shape``) holds."""
    arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]).newbyteorder("<"))
    if "shape" in v:
        arr = arr.reshape([int(n) for n in str(v["shape"]).split(",")])
    return arr


_LEAF = (str, int, float, bool, type(None))


class _Body:
    """The binary body being written: arrays appended on 4-byte boundaries."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, arr: np.ndarray, quantised: bool) -> dict[str, Any]:
        shape = arr.shape
        if quantised and arr.dtype.kind == "f" and arr.size >= MIN_QUANTISED:
            q, lo, step = quantise(arr)
            raw, ref = q.tobytes(), [self.size, int(arr.size), "q2", lo, step]
        else:
            code = "u1" if arr.dtype == np.uint8 else "f4"
            raw = np.ascontiguousarray(arr, dtype=_CODES[code]).tobytes()
            ref = [self.size, int(arr.size), code, 0.0, 0.0]
        self.parts.append(raw)
        pad = -len(raw) % 4
        if pad:
            self.parts.append(b"\0" * pad)
        self.size += len(raw) + pad
        out: dict[str, Any] = {"gf": ref}
        if len(shape) > 1:
            out["shape"] = ",".join(str(n) for n in shape)
        return out


def _replace(v: Any, body: _Body, quantised: bool) -> Any:
    """``v`` with every typed array moved into ``body`` (a reference left in its place)."""
    t = type(v)
    if t is dict:
        if "bdata" in v and "dtype" in v:
            return body.add(_spec_array(v), quantised)
        return {k: x if type(x) in _LEAF else _replace(x, body, quantised) for k, x in v.items()}
    if t is list or t is tuple:
        return [x if type(x) in _LEAF else _replace(x, body, quantised) for x in v]
    if t is np.ndarray and v.dtype.kind in "fiub":
        return body.add(v, quantised)
    if isinstance(v, Mapping):  # another mapping type: walked as a dict
        return _replace(dict(v), body, quantised)
    return v


def _log_axes(layout: Mapping[str, Any]) -> set[str]:
    """Trace axis references (``x``, ``y2``...) whose layout axis is logarithmic."""
    out = set()
    for key, ax in layout.items():
        if key[:5] in ("xaxis", "yaxis") and isinstance(ax, Mapping) and ax.get("type") == "log":
            out.add(key[0] + key[5:])
    return out


def _on_linear_axes(trace: Mapping[str, Any], log: set[str]) -> bool:
    return trace.get("xaxis", "x") not in log and trace.get("yaxis", "y") not in log


def pack_figure(fig: Mapping[str, Any]) -> bytes:
    """A plotly figure dict (``data``, ``layout``, ``frames``) in the packed form (module docstring).

    Arrays may be plotly typed-array specs (what :mod:`geoflow.animation` writes) or numpy arrays.
    A frame's trace takes its axes from the base trace it updates (its ``traces`` index).
    """
    layout = fig.get("layout") or {}
    log = _log_axes(layout)
    data = list(fig.get("data") or [])
    linear = [_on_linear_axes(tr, log) for tr in data]
    body = _Body()
    header: dict[str, Any] = {
        "data": [_replace(tr, body, linear[i]) for i, tr in enumerate(data)],
        "layout": _replace(layout, body, False),
    }
    if "frames" in fig:
        frames = []
        for fr in fig["frames"] or []:
            idx = fr.get("traces") or list(range(len(fr.get("data") or [])))
            out = {k: _replace(v, body, False) for k, v in fr.items() if k != "data"}
            out["data"] = [
                _replace(tr, body, linear[i] if i < len(linear) else _on_linear_axes(tr, log))
                for tr, i in zip(fr.get("data") or [], idx, strict=False)
            ]
            frames.append(out)
        header["frames"] = frames
    text = pio.to_json(header, validate=False).encode()  # plotly's encoder: NaN -> null, numpy scalars
    head = MAGIC + struct.pack("<I", len(text)) + text
    return head + b"\0" * (-len(head) % 4) + b"".join(body.parts)


def _restore(v: Any, body: memoryview) -> Any:
    if isinstance(v, dict):
        if isinstance(v.get("gf"), list):
            off, count, code, lo, step = v["gf"]
            dt = _CODES[code]
            raw = body[off : off + count * dt.itemsize]
            if len(raw) != count * dt.itemsize:
                raise ValueError(f"packed figure cut short: array at byte {off} ({count} values) missing")
            arr = np.frombuffer(raw, dtype=dt)
            if code == "q2":
                arr = dequantise(arr, lo, step)
            bdata = base64.b64encode(arr.tobytes()).decode()
            spec = {"dtype": "u1" if code == "u1" else "f4", "bdata": bdata}
            if "shape" in v:
                spec["shape"] = v["shape"]
            return spec
        return {k: _restore(x, body) for k, x in v.items()}
    if isinstance(v, list):
        return [_restore(x, body) for x in v]
    return v


def is_packed(blob: bytes) -> bool:
    return bytes(blob[:4]) == MAGIC


def unpack_figure(blob: bytes) -> dict[str, Any]:
    """A packed figure back as plotly JSON (typed arrays as float32 / uint8 base64 specs).

    Raises:
        ValueError: ``blob`` is not a packed figure, or is cut short.
    """
    if not is_packed(blob) or len(blob) < 8:
        raise ValueError("not a packed geoflow figure (it does not start with b'GFP1')")
    (n,) = struct.unpack_from("<I", blob, 4)
    if 8 + n > len(blob):
        raise ValueError(f"packed figure cut short: header of {n} bytes, {len(blob) - 8} there")
    header = json.loads(bytes(blob[8 : 8 + n]))
    start = 8 + n + (-(8 + n) % 4)
    return _restore(header, memoryview(blob)[start:])
