"""Plotly building blocks for geoflow's figures (no Streamlit here).

Overlays as :class:`Layer` (per-frame arrays with the style of their role, :data:`OVERLAY_STYLES`),
the particles' position colours (:func:`position_colors`), the base64 typed arrays plotly.js reads,
side charts (:func:`line_chart`, :func:`scatter_panel`) and :func:`image_grid`. The animated
figures (one or more panels, one slider and play button, numbers carried per frame) are built in
:mod:`geoflow.animation`; its main names are also reachable from here.

Conventions (design.md, "The app"): float32 arrays (plotly sends them base64-encoded), plain
``go.Scatter`` in frames (SVG, not WebGL, so frames animate reliably), fixed axis ranges,
``uirevision`` so zoom survives reruns, particles coloured by their starting position.

Also small builders for side charts (:func:`line_chart`, :func:`scatter_panel`), the float32 typed
arrays plotly.js reads, and :func:`image_grid` (images tiled into one array). Exports (PNG/SVG,
GIF/MP4, CSV, PNG image grids) live in :mod:`geoflow.export`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import plotly.graph_objects as go
import torch

LayerKind = Literal["markers", "lines", "contour"]
_MOVED = ("AnimatedFigure", "particle_animation", "flow_animation", "still_figure")


def __getattr__(name: str) -> Any:
    """The animated-figure builders moved to :mod:`geoflow.animation`; old imports keep working."""
    if name in _MOVED:
        from geoflow import animation

        return getattr(animation, name)
    raise AttributeError(f"module 'geoflow.figures' has no attribute {name!r}")


FONT = {"size": 16}


def typed_array(a: np.ndarray) -> dict[str, str]:
    """An array as plotly.js's base64 typed array (what plotly.py writes for numpy arrays).

    float32, or uint8 when the array is uint8 (the exact marginal's mass levels: 4x smaller).
    """
    if np.asarray(a).dtype == np.uint8:
        arr, code = np.ascontiguousarray(a), "u1"
    else:
        arr, code = np.ascontiguousarray(a, dtype="<f4"), "f4"
    out = {"dtype": code, "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}
    if arr.ndim > 1:  # e.g. a contour's z grid
        out["shape"] = ",".join(str(n) for n in arr.shape)
    return out


def _jsonable(tr: dict[str, Any]) -> dict[str, Any]:
    """A trace dict with its numpy arrays as typed arrays (plain JSON otherwise)."""
    return {
        k: typed_array(v) if isinstance(v, np.ndarray) else _jsonable(v) if isinstance(v, dict) else v
        for k, v in tr.items()
    }


def _decode_typed(v: Any) -> Any:
    """Inverse of :func:`typed_array` (other values pass through)."""
    if isinstance(v, dict) and set(v) >= {"dtype", "bdata"}:
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]).newbyteorder("<"))
        if "shape" in v:
            arr = arr.reshape([int(n) for n in str(v["shape"]).split(",")])
        return arr
    return v


@dataclass
class Layer:
    """An overlay drawn in every frame of an animation.

    Args:
        name: legend name (also the toggle label).
        kind: ``"markers"`` (points), ``"lines"`` (polylines separated by NaN rows) or
            ``"contour"`` (a density on a grid).
        xy: ``(F, m, 2)`` points per frame for markers / lines (NaN rows break a line).
        z: ``(F, g, g)`` values per frame for a contour, on the grid ``grid`` (g,) in x and y
            (``z[f, iy, ix]``).
        grid: ``(g,)`` grid coordinates for a contour.
        style: extra plotly trace properties (marker, line, opacity...).
        levels: evenly spaced contour levels to draw (default: plotly's choice).
        role: the overlay it draws (one of ``geoflow.overlays.OVERLAYS``), if any.
    """

    name: str
    kind: LayerKind
    xy: np.ndarray | None = None
    z: np.ndarray | None = None
    grid: np.ndarray | None = None
    style: dict[str, Any] = field(default_factory=dict)
    levels: tuple[float, ...] = ()
    role: str = ""

    def __post_init__(self) -> None:
        if self.kind in ("markers", "lines"):
            if self.xy is None or self.xy.ndim != 3 or self.xy.shape[2] != 2:
                raise ValueError(f"layer {self.name!r}: xy must have shape (F, m, 2)")
            self.xy = np.asarray(self.xy, dtype=np.float32)
        elif self.kind == "contour":
            if self.z is None or self.grid is None or self.z.ndim != 3:
                raise ValueError(f"layer {self.name!r}: a contour needs z (F, g, g) and grid (g,)")
            if self.z.dtype != np.uint8:
                self.z = np.asarray(self.z, dtype=np.float32)
            self.grid = np.asarray(self.grid, dtype=np.float32)
        else:
            raise ValueError(f"unknown layer kind {self.kind!r}; valid: markers, lines, contour")

    @property
    def n_frames(self) -> int:
        arr = self.xy if self.kind != "contour" else self.z
        assert arr is not None
        return arr.shape[0]

    def trace(self, f: int) -> dict[str, Any]:
        """The plotly trace (as a dict) of frame ``f``."""
        if self.kind == "contour":
            assert self.z is not None
            return {"type": "contour", "x": self.grid, "y": self.grid, "z": self.z[f]}
        assert self.xy is not None
        mode = "markers" if self.kind == "markers" else "lines"
        return {"type": "scatter", "mode": mode, "x": self.xy[f, :, 0], "y": self.xy[f, :, 1]}

    def base_trace(self) -> dict[str, Any]:
        """Frame 0's trace with the layer's name and style."""
        tr = self.trace(0)
        tr.update({"name": self.name, "hoverinfo": "skip"})
        if self.kind == "contour":
            contours: dict[str, Any] = {"coloring": "lines"}
            if self.levels:
                lv = self.levels
                step = lv[1] - lv[0] if len(lv) > 1 else 1.0
                contours.update({"start": lv[0], "end": lv[-1], "size": step})
            tr.update({"showscale": False, "contours": contours, "ncontours": 12, "showlegend": True})
        for k, v in self.style.items():
            tr[k] = {**tr[k], **v} if isinstance(v, dict) and isinstance(tr.get(k), dict) else v
        return tr


# the look of each overlay of geoflow.overlays, by its role. Greys and black lie outside the
# particles' colour map (position_colors: saturation >= 0.25 at value 0.85), so the JKO particles
# and the exact marginal's lines never look like particles.
JKO_COLOR = "#111111"
CONTOUR_COLOR = "rgba(60,60,60,0.65)"
OVERLAY_STYLES: dict[str, dict[str, Any]] = {
    "exact marginal": {"contours": {"coloring": "none"}, "line": {"color": CONTOUR_COLOR, "width": 1.4}},
    "exact marginal samples": {"marker": {"color": "rgba(90,90,90,0.35)", "size": 4}},
    "JKO path": {
        "marker": {"color": JKO_COLOR, "size": 6, "symbol": "circle-open", "line": {"width": 1.1}},
        "opacity": 0.6,
    },
    "velocity field": {"line": {"color": "rgba(200,40,40,0.7)", "width": 1.5}},
    "x0_hat": {"marker": {"color": "rgba(0,0,0,0.55)", "size": 4, "symbol": "x"}},
    "warped grid": {"line": {"color": "rgba(60,90,200,0.45)", "width": 1}},
    "W2 geodesic": {"marker": {"color": "rgba(230,120,0,0.6)", "size": 4, "symbol": "triangle-up"}},
}


def overlay_layer(ov: Any) -> Layer:
    """A :class:`Layer` from a ``geoflow.overlays.Overlay`` (arrays + role), styled by its role."""
    role = ov.role
    if role == "exact marginal" and ov.kind == "markers":
        role = "exact marginal samples"
    style = dict(OVERLAY_STYLES.get(role, {}))
    return Layer(
        ov.name, ov.kind, xy=ov.xy, z=ov.z, grid=ov.grid, style=style, levels=tuple(ov.levels), role=ov.role
    )


# --------------------------------------------------------------------------- colours
def position_colors(points: np.ndarray) -> list[str]:
    """A 2-D colour map of positions: hue from the angle, saturation from the radius.

    Args:
        points: (n, 2) starting positions.

    Returns:
        n hex colours; nearby points get similar colours, so transport stays readable.
    """
    p = np.asarray(points, dtype=np.float64)
    c = p - p.mean(0)
    r = np.hypot(c[:, 0], c[:, 1])
    scale = np.quantile(r, 0.95) if len(r) else 1.0
    hue = (np.arctan2(c[:, 1], c[:, 0]) / (2 * math.pi)) % 1.0
    sat = np.clip(0.25 + 0.75 * r / max(scale, 1e-9), 0.25, 1.0)
    rgb = _hsv_to_rgb(hue, sat, np.full_like(hue, 0.85))
    codes = np.round(255 * rgb).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in codes]


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised ``colorsys.hsv_to_rgb``: arrays of shape (n,) in [0, 1] -> (n, 3)."""
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [
            np.stack([v, t, p], 1),
            np.stack([q, v, p], 1),
            np.stack([p, v, t], 1),
            np.stack([p, q, v], 1),
            np.stack([t, p, v], 1),
            np.stack([v, p, q], 1),
        ]
    )
    return table[i, np.arange(len(h))]


# --------------------------------------------------------------------------- axes
def _axes(bounds: tuple[float, float], uirevision: str) -> dict[str, Any]:
    lo, hi = bounds
    ax = {"range": [lo, hi], "zeroline": False, "showgrid": True, "gridcolor": "#e5e5e5"}
    return {
        "xaxis": {**ax, "constrain": "domain"},
        "yaxis": {**ax, "scaleanchor": "x", "scaleratio": 1},
        "uirevision": uirevision,
        "plot_bgcolor": "white",
        "font": FONT,
    }


def line_chart(
    x: np.ndarray,
    series: dict[str, np.ndarray],
    *,
    title: str,
    xaxis: str,
    yaxis: str,
    floor: float | None = None,
    floor_label: str = "floor",
    log_x: bool = False,
    log_y: bool = False,
    markers: bool = True,
    uirevision: str = "geoflow-side",
) -> go.Figure:
    """A small line chart of one or more series against x, with an optional horizontal floor."""
    fig = go.Figure()
    for name, y in series.items():
        fig.add_trace(
            go.Scatter(
                x=np.asarray(x, dtype=np.float32),
                y=np.asarray(y, dtype=np.float32),
                name=name,
                mode="lines+markers" if markers else "lines",
            )
        )
    if floor is not None and math.isfinite(floor):
        fig.add_hline(
            y=floor, line_dash="dash", line_color="grey", annotation_text=f"{floor_label} {floor:.3g}"
        )
    fig.update_layout(
        title={"text": title},
        xaxis_title=xaxis,
        yaxis_title=yaxis,
        height=320,
        margin={"l": 50, "r": 10, "t": 50, "b": 40},
        uirevision=uirevision,
        font=FONT,
        legend={"orientation": "h", "y": -0.25},
        plot_bgcolor="white",
    )
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def scatter_panel(
    points: dict[str, np.ndarray],
    *,
    title: str,
    bounds: tuple[float, float],
    colors: Sequence[str] | None = None,
    uirevision: str = "geoflow-panel",
) -> go.Figure:
    """A static scatter of named point sets (n_i, 2); the first takes ``colors`` if given."""
    fig = go.Figure()
    for k, (name, p) in enumerate(points.items()):
        p = np.asarray(p, dtype=np.float32)
        marker: dict[str, Any] = {"size": 5, "opacity": 0.8}
        if k == 0 and colors is not None:
            marker["color"] = list(colors)
        fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", name=name, marker=marker))
    fig.update_layout(
        **_axes(bounds, uirevision),
        title={"text": title},
        height=520,
        margin={"l": 30, "r": 10, "t": 90},
        legend={"orientation": "h", "x": 0.0, "y": 1.0, "yanchor": "bottom"},
    )
    return fig


def figure_json_bytes(fig: go.Figure) -> int:
    """Size in bytes of the JSON Streamlit sends for ``fig``."""
    import plotly.io as pio

    return len(pio.to_json(fig, validate=False).encode())


# --------------------------------------------------------------------------- images
def image_grid(x: torch.Tensor, nrow: int = 8, pad: int = 1, scale: int = 4) -> np.ndarray:
    """Tile images ``(B, C, H, W)`` in [-1, 1] into one uint8 array, grey padding.

    C = 1 (grey) gives ``(rows, cols)``; C = 3 (RGB) gives ``(rows, cols, 3)``.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected grey or RGB images of shape (B, 1 or 3, H, W), got {tuple(x.shape)}")
    if nrow < 1 or scale < 1:
        raise ValueError("nrow and scale must be >= 1")
    b, c, h, w = x.shape
    img = ((x.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    img = img.repeat_interleave(scale, 2).repeat_interleave(scale, 3).permute(0, 2, 3, 1)  # (B, h, w, C)
    h, w = h * scale, w * scale
    ncol, nrows = min(nrow, b), math.ceil(b / nrow)
    out = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), 128, dtype=np.uint8)
    for k in range(b):
        r, col = divmod(k, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        out[y0 : y0 + h, x0 : x0 + w] = img[k].numpy()
    return out[..., 0] if c == 1 else out
