"""Exports of what the screen shows, as bytes (no Streamlit here).

* :func:`static_image`: PNG/SVG of one (still) figure through kaleido, which needs a Chrome/Chromium
  (:func:`find_chromium`; :class:`ExportUnavailable` says when there is none).
* :func:`render_frames`, :func:`gif_bytes`, :func:`mp4_bytes`: the animation's frames drawn with PIL
  (no browser needed), as an animated GIF, or as an H.264 MP4 through the ffmpeg of the
  imageio-ffmpeg wheel.
* :func:`paths_csv`, :func:`table_csv`: the numbers behind a figure, as CSV.
* :func:`save_image_grid`: images as one PNG grid (:func:`geoflow.figures.image_grid`).

Figures themselves are built in :mod:`geoflow.figures`; this module may import it, never the reverse.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import plotly.graph_objects as go
import torch

from geoflow.figures import image_grid

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


class ExportUnavailable(RuntimeError):
    """A static export needs a tool that is not installed here; the message says which."""


def find_chromium() -> str | None:
    """Path of a Chrome/Chromium kaleido can drive, or None."""
    env = os.environ.get("BROWSER_PATH")
    if env and os.path.exists(env):
        return env
    for c in CHROMIUM_CANDIDATES:
        if os.path.exists(c):
            return c
    return shutil.which("chromium") or shutil.which("google-chrome")


def static_image(fig: go.Figure, fmt: Literal["png", "svg"] = "png", scale: float = 2.0) -> bytes:
    """PNG or SVG bytes of a (still) figure through kaleido.

    Raises:
        ExportUnavailable: no Chromium found, or kaleido failed to drive it.
    """
    if fmt not in ("png", "svg"):
        raise ValueError(f"unknown image format {fmt!r}; valid: png, svg")
    chrome = find_chromium()
    if chrome is None:
        raise ExportUnavailable(
            "PNG/SVG export needs Chromium (kaleido drives it): install it with "
            "`apt-get install chromium`, or use the camera icon of the chart, or the GIF export."
        )
    os.environ.setdefault("BROWSER_PATH", chrome)
    try:
        return fig.to_image(format=fmt, scale=scale if fmt == "png" else 1.0, width=900, height=800)
    except Exception as e:  # kaleido raises many kinds; the user needs one readable line
        raise ExportUnavailable(f"static export failed ({type(e).__name__}: {str(e)[:200]})") from None


def render_frames(
    paths: np.ndarray,
    colors: Sequence[str],
    bounds: tuple[float, float],
    labels: Sequence[str] | None = None,
    size: int = 480,
    radius: float = 2.0,
    every: int = 1,
) -> list[np.ndarray]:
    """Draw each frame of ``paths`` (F, n, 2) as an RGB image with PIL (no browser needed).

    Returns:
        list of (size, size, 3) uint8 arrays.
    """
    from PIL import Image, ImageDraw

    lo, hi = bounds
    paths = np.asarray(paths, dtype=np.float64)
    rgb = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in colors]
    px = (paths - lo) / (hi - lo) * (size - 1)
    out = []
    for f in range(0, paths.shape[0], max(1, every)):
        img = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(img)
        # light axes through the origin, as in the live figure
        o = (0 - lo) / (hi - lo) * (size - 1)
        draw.line([(o, 0), (o, size)], fill=(225, 225, 225))
        draw.line([(0, size - 1 - o), (size, size - 1 - o)], fill=(225, 225, 225))
        for (x, y), c in zip(px[f], rgb, strict=True):
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            yy = size - 1 - y
            draw.ellipse([x - radius, yy - radius, x + radius, yy + radius], fill=c)
        if labels is not None:
            draw.text((8, 8), labels[f], fill=(0, 0, 0))
        out.append(np.asarray(img))
    return out


def gif_bytes(images: Sequence[np.ndarray], fps: float = 12.0) -> bytes:
    """An animated GIF (looping) of RGB frames, in memory."""
    import imageio.v3 as iio

    if not images:
        raise ValueError("no frames to export")
    return iio.imwrite("<bytes>", np.stack(images), extension=".gif", duration=1000.0 / fps, loop=0)


def mp4_bytes(images: Sequence[np.ndarray], fps: float = 12.0) -> bytes:
    """An H.264 MP4 of RGB frames through the ffmpeg shipped in the imageio-ffmpeg wheel.

    ffmpeg writes a seekable file, so a private temporary file is used and read back.
    """
    import imageio_ffmpeg

    if not images:
        raise ValueError("no frames to export")
    h, w = images[0].shape[:2]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "anim.mp4")
        writer = imageio_ffmpeg.write_frames(
            path, (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=16
        )
        writer.send(None)
        for im in images:
            writer.send(np.ascontiguousarray(im))
        writer.close()
        with open(path, "rb") as f:
            return f.read()


def paths_csv(paths: np.ndarray, times: np.ndarray, phase: Sequence[str] | None = None) -> bytes:
    """CSV of every plotted particle position: frame, phase, t, particle, x, y."""
    paths = np.asarray(paths, dtype=np.float32)
    n_f, n, _ = paths.shape
    buf = io.StringIO()
    buf.write("frame,phase,t,particle,x,y\n")
    for f in range(n_f):
        ph = phase[f] if phase is not None else ""
        t = float(times[f])
        for i in range(n):
            buf.write(f"{f},{ph},{t:.6g},{i},{paths[f, i, 0]:.6g},{paths[f, i, 1]:.6g}\n")
    return buf.getvalue().encode()


def table_csv(columns: dict[str, Sequence[Any]]) -> bytes:
    """CSV of equal-length named columns (the numbers behind a side chart)."""
    names = list(columns)
    lens = {len(v) for v in columns.values()}
    if len(lens) > 1:
        raise ValueError(f"columns have different lengths: {sorted(lens)}")
    rows = zip(*(columns[k] for k in names), strict=True)
    lines = [",".join(names)] + [
        ",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in r) for r in rows
    ]
    return ("\n".join(lines) + "\n").encode()


def save_image_grid(
    x: torch.Tensor, path_or_buffer: str | Path | IO[bytes], nrow: int = 8, scale: int = 4
) -> None:
    """Write images ``(B, 1, H, W)`` in [-1, 1] as one PNG grid (to a path or a binary buffer)."""
    from PIL import Image

    grid = Image.fromarray(image_grid(x, nrow=nrow, scale=scale), mode="L")
    if isinstance(path_or_buffer, str | Path):
        Path(path_or_buffer).parent.mkdir(parents=True, exist_ok=True)
    grid.save(path_or_buffer, format="PNG")
