"""Plotly figures for geoflow's particle flows (no Streamlit here).

The main builder, :func:`particle_animation`, turns a particle path ``(F, n, 2)`` (one row per
frame, particles keeping their identity along simulated paths) into one plotly figure with all
frames, a time slider and play / pause / slow-motion buttons: the animation runs in the browser.
Overlays (:class:`Layer`) are drawn in every frame beside the particles: exact-marginal contours,
JKO particles, velocity arrows, x0_hat, a warped grid, the W2 geodesic.

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
FONT = {"size": 16}


def typed_array(a: np.ndarray) -> dict[str, str]:
    """A float32 array as plotly.js's base64 typed array (what plotly.py writes for numpy arrays)."""
    arr = np.ascontiguousarray(a, dtype="<f4")
    out = {"dtype": "f4", "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}
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


class AnimatedFigure(go.Figure):
    """A ``go.Figure`` whose whole content is kept as ready plotly JSON (float32 base64 arrays).

    plotly.py validates every property of every object it is given: for hundreds of frames and a
    slider step per frame that costs about a second, and a settings change must rerun in well under
    that. :func:`particle_animation` builds its content from checked arrays, so it skips validation;
    ``to_dict`` (what Streamlit and ``plotly.io.to_json`` call) returns the JSON. The figure's own
    ``data`` / ``layout`` stay empty: read ``raw`` (or use :func:`still_figure` for a validated copy).
    """

    def __init__(self, raw: dict[str, Any]) -> None:
        super().__init__()
        self._raw = raw

    @property
    def raw(self) -> dict[str, Any]:
        """``{"data", "layout", "frames"}`` as plotly JSON."""
        return self._raw

    @property
    def raw_frames(self) -> list[dict[str, Any]]:
        """The frames as plotly JSON dicts (``name``, ``data``, ``traces``)."""
        return self._raw["frames"]

    def to_dict(self) -> dict[str, Any]:
        return {"data": self._raw["data"], "layout": self._raw["layout"], "frames": self._raw["frames"]}

    def to_plotly_json(self) -> dict[str, Any]:
        return self.to_dict()


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
    """

    name: str
    kind: LayerKind
    xy: np.ndarray | None = None
    z: np.ndarray | None = None
    grid: np.ndarray | None = None
    style: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind in ("markers", "lines"):
            if self.xy is None or self.xy.ndim != 3 or self.xy.shape[2] != 2:
                raise ValueError(f"layer {self.name!r}: xy must have shape (F, m, 2)")
            self.xy = np.asarray(self.xy, dtype=np.float32)
        elif self.kind == "contour":
            if self.z is None or self.grid is None or self.z.ndim != 3:
                raise ValueError(f"layer {self.name!r}: a contour needs z (F, g, g) and grid (g,)")
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
            tr.update({"showscale": False, "contours": {"coloring": "lines"}, "ncontours": 12})
        tr.update(self.style)
        return tr


# the look of each overlay of geoflow.overlays, by its role
OVERLAY_STYLES: dict[str, dict[str, Any]] = {
    "exact marginal": {"colorscale": "Greys", "opacity": 0.6},
    "exact marginal samples": {"marker": {"color": "rgba(90,90,90,0.35)", "size": 4}},
    "JKO path": {"marker": {"color": "rgba(20,140,60,0.55)", "size": 5, "symbol": "diamond"}},
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
    return Layer(ov.name, ov.kind, xy=ov.xy, z=ov.z, grid=ov.grid, style=dict(OVERLAY_STYLES.get(role, {})))


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


# --------------------------------------------------------------------------- animation
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


def _frame_args(duration: int) -> dict[str, Any]:
    return {
        "frame": {"duration": duration, "redraw": True},
        "mode": "immediate",
        "fromcurrent": True,
        "transition": {"duration": 0},
    }


def particle_animation(
    paths: np.ndarray,
    labels: Sequence[str],
    *,
    colors: Sequence[str] | None = None,
    layers: Sequence[Layer] = (),
    bounds: tuple[float, float] = (-4.5, 4.5),
    title: str = "",
    start_frame: int = 0,
    marker_size: float = 5.0,
    uirevision: str = "geoflow",
    frame_ms: int = 80,
    compact: bool = False,
) -> AnimatedFigure:
    """An animated scatter of particles that keep their identity across frames.

    Args:
        paths: (F, n, 2) particle positions per frame.
        labels: F slider labels (e.g. ``"noising t=0.50"``).
        colors: n colours (default: :func:`position_colors` of frame 0).
        layers: overlays, each with F frames; drawn under the particles.
        bounds: fixed square axis range (lo, hi).
        title: figure title.
        start_frame: the frame shown before play (single-step mode moves it).
        marker_size: particle marker size in px.
        uirevision: constant across reruns so zoom and pan survive.
        frame_ms: playback duration of one frame (ms); the slow-motion button uses 5x.
        compact: narrow layout (buttons under a full-width slider) for side-by-side figures.

    The slider carries ``len(labels)`` steps; play, slow motion and pause are plotly buttons, so
    the animation runs in the browser without a server round trip.

    Returns:
        a plotly Figure with ``len(labels)`` frames named ``"0"..."F-1"``.
    """
    paths = np.asarray(paths, dtype=np.float32)
    if paths.ndim != 3 or paths.shape[2] != 2:
        raise ValueError(f"paths must have shape (F, n, 2), got {paths.shape}")
    n_frames = paths.shape[0]
    if len(labels) != n_frames:
        raise ValueError(f"need one label per frame: {len(labels)} labels for {n_frames} frames")
    for layer in layers:
        if layer.n_frames != n_frames:
            raise ValueError(f"layer {layer.name!r} has {layer.n_frames} frames, particles have {n_frames}")
    start = int(np.clip(start_frame, 0, n_frames - 1))
    cols = list(colors) if colors is not None else position_colors(paths[0])

    def particles(f: int) -> dict[str, Any]:
        return {"type": "scatter", "mode": "markers", "x": paths[f, :, 0], "y": paths[f, :, 1]}

    data = [layer.base_trace() for layer in layers]
    for i, layer in enumerate(layers):
        data[i].update(layer.trace(start))
    base = particles(start)
    base.update(
        {
            "name": "particles",
            "marker": {"color": cols, "size": marker_size, "opacity": 0.85, "line": {"width": 0}},
            "hoverinfo": "skip",
        }
    )
    data.append(base)
    traces = list(range(len(data)))
    frames = [
        {
            "name": str(f),
            "data": [_jsonable(layer.trace(f)) for layer in layers] + [_jsonable(particles(f))],
            "traces": traces,
        }
        for f in range(n_frames)
    ]
    steps = [
        {"args": [[str(f)], _frame_args(0)], "label": labels[f], "method": "animate"} for f in range(n_frames)
    ]
    layout = {
        **_axes(bounds, uirevision),
        "title": {"text": title},
        "height": 760,
        "margin": {"l": 50, "r": 20, "t": 110, "b": 190 if compact else 150},
        "legend": {"orientation": "h", "x": 0.0, "y": 1.0, "yanchor": "bottom", "xanchor": "left"},
        "updatemenus": [
            {
                "type": "buttons",
                "direction": "left",
                "x": 0.0,
                "y": 0.0,
                "xanchor": "left",
                "yanchor": "top",
                "pad": {"t": 130 if compact else 70, "r": 10},
                "showactive": False,
                "font": {"size": 15},
                "buttons": [
                    {"label": "▶ Play", "method": "animate", "args": [None, _frame_args(frame_ms)]},
                    {"label": "Slow", "method": "animate", "args": [None, _frame_args(5 * frame_ms)]},
                    {
                        "label": "❚❚ Pause",
                        "method": "animate",
                        "args": [[None], {"frame": {"duration": 0, "redraw": False}, "mode": "immediate"}],
                    },
                ],
            }
        ],
        "sliders": [
            {
                "active": start,
                "steps": steps,
                "x": 0.0 if compact else 0.3,
                "len": 1.0 if compact else 0.7,
                "y": 0.0,
                "yanchor": "top",
                "pad": {"t": 50},
                "currentvalue": {"prefix": "", "font": {"size": 18}},
                "transition": {"duration": 0},
                "font": {"size": 11},
            }
        ],
    }
    return AnimatedFigure({"data": [_jsonable(tr) for tr in data], "layout": layout, "frames": frames})


def flow_animation(
    traj: Any,
    *,
    title: str,
    bounds: tuple[float, float],
    layers: Sequence[Layer] = (),
    color_by_noise: bool = False,
    start_frame: int = 0,
    uirevision: str = "geoflow",
) -> AnimatedFigure:
    """The Flows view of a ``geoflow.run.Trajectory``: particles coloured by x_0 (or x_T), overlays.

    Args:
        traj: the trajectory (``paths`` (F, n, 2), ``labels``, ``data`` and ``noise`` (n, 2)).
        color_by_noise: colour by the start of generation x_T instead of the data x_0.
    """
    anchor = traj.noise if color_by_noise or traj.data is None else traj.data
    return particle_animation(
        traj.paths,
        traj.labels,
        colors=position_colors(anchor),
        layers=layers,
        bounds=bounds,
        title=title,
        start_frame=start_frame,
        uirevision=uirevision,
    )


def still_figure(fig: go.Figure, frame: int) -> go.Figure:
    """The figure at one frame, without frames, slider or buttons (for PNG/SVG export)."""
    if isinstance(fig, AnimatedFigure):
        d = fig.raw
        data = [{k: _decode_typed(v) for k, v in tr.items()} for tr in d["data"]]
        out = go.Figure(data=data, layout=d["layout"])
        raw = d["frames"]
    else:
        out = go.Figure(fig)
        raw = [f.to_plotly_json() for f in fig.frames]
    if raw:
        f = int(np.clip(frame, 0, len(raw) - 1))
        for i, tr in zip(raw[f]["traces"], raw[f]["data"], strict=True):
            out.data[i].update({k: _decode_typed(v) for k, v in tr.items()})
        label = out.layout.sliders[0].steps[f].label if out.layout.sliders else ""
        title = (out.layout.title.text or "") + (f" ({label})" if label else "")
        out.update_layout(title_text=title)
    out.frames = ()
    out.layout.sliders = ()
    out.layout.updatemenus = ()
    return out


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
    """Tile images ``(B, 1, H, W)`` in [-1, 1] into one uint8 array (rows, cols), grey padding."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected grey images of shape (B, 1, H, W), got {tuple(x.shape)}")
    if nrow < 1 or scale < 1:
        raise ValueError("nrow and scale must be >= 1")
    b, _, h, w = x.shape
    img = ((x.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0]
    img = img.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    h, w = h * scale, w * scale
    ncol, nrows = min(nrow, b), math.ceil(b / nrow)
    out = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad), 128, dtype=np.uint8)
    for k in range(b):
        r, c = divmod(k, nrow)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = (
            img[k].numpy()
        )
    return out
