"""Exports of what the screen shows, as bytes (no Streamlit here).

* :func:`static_image`: PNG/SVG of one (still) figure through kaleido, which needs a Chrome/Chromium
  (:func:`find_chromium`; :class:`ExportUnavailable` says when there is none).
* :func:`render_frames`: every frame of an animated figure rendered by kaleido from the *same* plotly
  figure the screen shows (:func:`geoflow.animation.still_figure` of each frame: every overlay, the
  notes, title, axes, legend and colouring), at a size and font scale (:data:`EXPORT_STYLES`, e.g.
  ``slide``: 1920 x 1080 with large fonts), with a progress callback; :func:`gif_bytes` and
  :func:`mp4_bytes` encode them (H.264 through the ffmpeg of the imageio-ffmpeg wheel).
* :func:`paths_csv`, :func:`table_csv`: the numbers behind a figure, as CSV.
* :func:`save_image_grid`: images as one PNG grid (:func:`geoflow.figures.image_grid`).

Figures themselves are built in :mod:`geoflow.figures`; this module may import it, never the reverse.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import plotly.graph_objects as go
import torch

from geoflow.figures import image_grid

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
MAX_ANIMATION_FRAMES = 100  # a GIF/MP4 shows at most this many frames (evenly spread, the last kept)
RENDER_TABS = 2  # kaleido renders this many frames at a time
RENDER_TIMEOUT_S = 60.0  # one frame
_RENDERING = threading.BoundedSemaphore(1)  # one movie export at a time per process (a classroom server)


@dataclass(frozen=True)
class ExportStyle:
    """Size and scale of an exported image.

    Attributes:
        name: ``screen`` or ``slide``.
        width, height: pixels.
        font_scale: factor on every font (title, axes, legend, notes).
        marker_scale: factor on marker sizes (particles, JKO markers, cursors).
    """

    name: str
    width: int
    height: int
    font_scale: float = 1.0
    marker_scale: float = 1.0


EXPORT_STYLES = {
    "screen": ExportStyle("screen", 1200, 800),
    "slide": ExportStyle("slide", 1920, 1080, font_scale=1.75, marker_scale=1.6),
}


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


def _require_chromium(what: str) -> None:
    chrome = find_chromium()
    if chrome is None:
        raise ExportUnavailable(
            f"{what} needs Chromium (kaleido drives it): install it with `apt-get install chromium`, "
            "or use the camera icon of the chart."
        )
    os.environ.setdefault("BROWSER_PATH", chrome)


def styled(fig: go.Figure, style: ExportStyle) -> go.Figure:
    """A still figure at an export style: its size, every font and the markers scaled.

    Args:
        fig: a still figure (:func:`geoflow.animation.still_figure`); changed in place and returned.
    """
    k = style.font_scale
    base = fig.layout.font.size or 16
    fig.update_layout(width=style.width, height=style.height, font_size=base * k)
    if fig.layout.title.font.size:
        fig.layout.title.font.size *= k
    for ann in fig.layout.annotations:
        ann.font.size = (ann.font.size or base) * k
    m = fig.layout.margin
    fig.update_layout(margin={"t": (m.t or 100) * k, "l": (m.l or 60) * k, "b": 60 * k, "r": (m.r or 20) * k})
    for tr in fig.data:
        if (
            getattr(tr, "type", "") == "scatter"
            and "markers" in (tr.mode or "")
            and tr.marker.size is not None
        ):
            tr.marker.size = (
                np.asarray(tr.marker.size) * style.marker_scale
                if np.ndim(tr.marker.size)
                else (tr.marker.size * style.marker_scale)
            )
    return fig


def static_image(
    fig: go.Figure, fmt: Literal["png", "svg"] = "png", scale: float = 2.0, style: ExportStyle | None = None
) -> bytes:
    """PNG or SVG bytes of a (still) figure through kaleido.

    Args:
        style: size and font scale (:data:`EXPORT_STYLES`); default 900 x 800 at the screen's fonts.

    Raises:
        ExportUnavailable: no Chromium found, or kaleido failed to drive it.
    """
    if fmt not in ("png", "svg"):
        raise ValueError(f"unknown image format {fmt!r}; valid: png, svg")
    _require_chromium("PNG/SVG export")
    if style is not None:
        fig = styled(go.Figure(fig), style)
    width, height = (style.width, style.height) if style is not None else (900, 800)
    if style is not None and fmt == "png":
        scale = 1.0
    try:
        return fig.to_image(format=fmt, scale=scale if fmt == "png" else 1.0, width=width, height=height)
    except Exception as e:  # kaleido raises many kinds; the user needs one readable line
        raise ExportUnavailable(f"static export failed ({type(e).__name__}: {str(e)[:200]})") from None


def animation_frames(n_frames: int, max_frames: int = MAX_ANIMATION_FRAMES) -> list[int]:
    """Frame indices a movie shows: all of them, or ``max_frames`` evenly spread (first and last kept)."""
    if n_frames <= max_frames:
        return list(range(n_frames))
    return sorted({int(round(v)) for v in np.linspace(0, n_frames - 1, max_frames)})


def render_frames(
    fig: go.Figure,
    frames: Sequence[int] | None = None,
    *,
    style: ExportStyle = EXPORT_STYLES["screen"],
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Render frames of an animated figure with kaleido: what the screen shows, frame by frame.

    Each frame is :func:`geoflow.animation.still_figure` of the figure the app draws (every overlay,
    the per-frame notes, title, axes, legend, colours), at ``style``'s size and fonts.

    Args:
        fig: the animated figure.
        frames: frame indices (default :func:`animation_frames` of all).
        style: :data:`EXPORT_STYLES` entry.
        progress: called with ``(done, total)`` after each frame.

    Returns:
        RGB frames, (height, width, 3) uint8 each.

    Raises:
        ExportUnavailable: no Chromium, or kaleido failed.
    """
    from PIL import Image

    from geoflow.animation import AnimatedFigure, still_figure

    _require_chromium("GIF/MP4 export")
    n_total = len(fig.raw_frames) if isinstance(fig, AnimatedFigure) else max(len(fig.frames), 1)
    picks = list(frames) if frames is not None else animation_frames(n_total)
    opts = {"format": "png", "width": style.width, "height": style.height, "scale": 1}
    stills = [styled(still_figure(fig, f), style) for f in picks]
    done = [0]

    async def render_all() -> list[bytes]:
        import kaleido

        async with kaleido.Kaleido(n=RENDER_TABS, timeout=RENDER_TIMEOUT_S, mathjax=False) as k:
            gate = asyncio.Semaphore(RENDER_TABS)

            async def one(still: go.Figure) -> bytes:
                async with gate:
                    png = await k.calc_fig(still, opts=opts)
                done[0] += 1
                if progress is not None:
                    progress(done[0], len(stills))
                return png

            return list(await asyncio.gather(*(one(s) for s in stills)))

    with _RENDERING:
        try:
            pngs = _run_async(render_all)
        except Exception as e:  # kaleido / choreographer raise many kinds
            raise ExportUnavailable(
                f"rendering the frames failed ({type(e).__name__}: {str(e)[:200]})"
            ) from None
    return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in pngs]


def _run_async(fn: Callable[[], Any]) -> Any:
    """Run a coroutine function to completion, also from a thread whose event loop already runs."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(fn())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = asyncio.run(fn())
        except BaseException as e:  # re-raised in the caller's thread
            box["err"] = e

    th = threading.Thread(target=target)
    th.start()
    th.join()
    if "err" in box:
        raise box["err"]
    return box["out"]


def gif_bytes(images: Sequence[np.ndarray], fps: float = 12.0) -> bytes:
    """An animated GIF (looping) of RGB frames, in memory.

    Each frame gets its own 255-colour palette (PIL's fast octree, no dithering): five times faster
    than imageio's default on slide-size frames, and exact on the flat colours of a chart.
    """
    from PIL import Image

    if not images:
        raise ValueError("no frames to export")
    frames = [
        Image.fromarray(np.ascontiguousarray(im[..., :3])).quantize(
            colors=255, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
        for im in images
    ]
    buf = io.BytesIO()
    frames[0].save(
        buf, format="GIF", save_all=True, append_images=frames[1:], duration=int(round(1000 / fps)), loop=0
    )
    return buf.getvalue()


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
            path, (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=8
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
    """Write images ``(B, C, H, W)`` in [-1, 1] (C = 1 grey, 3 RGB) as one PNG grid (path or buffer)."""
    from PIL import Image

    grid = Image.fromarray(image_grid(x, nrow=nrow, scale=scale))  # mode L or RGB from the array
    if isinstance(path_or_buffer, str | Path):
        Path(path_or_buffer).parent.mkdir(parents=True, exist_ok=True)
    grid.save(path_or_buffer, format="PNG")
