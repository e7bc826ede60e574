"""Animated figures: particle panels, overlays and charts driven by one slider and one play button.

:func:`animated_panels` is the one builder. It turns one or more square :class:`Panel` s (particles
keeping their identity across frames, and their :class:`~geoflow.figures.Layer` overlays) and
optional line :class:`Chart` s (whose cursor follows the current frame) into one plotly figure with
all frames: the browser animates every panel, every chart cursor and every per-frame note together,
with no server round trip. Numbers that change with time (W2 to the JKO path, the frame caption)
travel in each frame's ``layout`` as annotation text.

On top of it: :func:`particle_animation` (one panel), :func:`flow_animation` (the Flows view of a
trajectory: overlays, agreement numbers and charts, or linked small multiples particles | JKO path |
exact marginal), and :func:`comparison_animation` (runs A and B side by side on one timeline, see
:func:`common_frames`). :func:`still_figure` gives one frame as a plain figure (what exports draw).

Conventions (design.md, "The app"): float32 typed arrays, plain ``scatter`` traces in frames,
fixed square axes shared by every panel, ``uirevision`` so zoom survives reruns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go

from geoflow.figures import FONT, Layer, _decode_typed, _jsonable, position_colors

PHASE_COLORS = {"noising": "#1f77b4", "generation": "#d62728"}


class AnimatedFigure(go.Figure):
    """A ``go.Figure`` whose whole content is kept as ready plotly JSON (float32 base64 arrays).

    plotly.py validates every property of every object it is given: for hundreds of frames and a
    slider step per frame that costs about a second, and a settings change must rerun in well under
    that. :func:`animated_panels` builds its content from checked arrays, so it skips validation;
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
        """The frames as plotly JSON dicts (``name``, ``data``, ``traces``, ``layout``)."""
        return self._raw["frames"]

    def to_dict(self) -> dict[str, Any]:
        return {"data": self._raw["data"], "layout": self._raw["layout"], "frames": self._raw["frames"]}

    def to_plotly_json(self) -> dict[str, Any]:
        return self.to_dict()


@dataclass
class Panel:
    """One square panel of an animation.

    Attributes:
        paths: (F, n, 2) particles per frame, or None for a panel of overlays only.
        colors: n colours (default: :func:`~geoflow.figures.position_colors` of frame 0).
        layers: overlays with F frames each, drawn under the particles in this order.
        title: bold first line of the panel's note box (top left).
        notes: one short text per frame under the title (it follows the slider).
    """

    paths: np.ndarray | None = None
    colors: Sequence[str] | None = None
    layers: Sequence[Layer] = ()
    title: str = ""
    notes: Sequence[str] | None = None


@dataclass
class Chart:
    """A small line chart beside the panels; its cursors mark the current frame's values.

    Attributes:
        title: shown above the chart.
        xaxis, yaxis: axis titles.
        lines: static plotly scatter traces as dicts (``x``, ``y``, ``name``, ``line``...).
        cursors: ``(x (F,), y (F,), style)``: one marker per frame, moved by the slider.
    """

    title: str
    xaxis: str
    yaxis: str
    lines: Sequence[dict[str, Any]] = ()
    cursors: Sequence[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = field(default_factory=list)


def _axis_name(i: int, xy: str) -> str:
    """Layout key of axis i (0-based): ``xaxis``, ``xaxis2``..."""
    return f"{xy}axis" if i == 0 else f"{xy}axis{i + 1}"


def _axis_ref(i: int, xy: str) -> str:
    """Trace reference of axis i: ``x``, ``x2``..."""
    return xy if i == 0 else f"{xy}{i + 1}"


def frame_args(duration: int) -> dict[str, Any]:
    """``Plotly.animate`` options: jump to a frame (redraw), no tweening."""
    return {
        "frame": {"duration": duration, "redraw": True},
        "mode": "immediate",
        "fromcurrent": True,
        "transition": {"duration": 0},
    }


def _check(panels: Sequence[Panel], charts: Sequence[Chart], n_frames: int) -> None:
    for p in panels:
        if p.paths is not None:
            if p.paths.ndim != 3 or p.paths.shape[2] != 2:
                raise ValueError(f"paths must have shape (F, n, 2), got {p.paths.shape}")
            if p.paths.shape[0] != n_frames:
                raise ValueError(f"need one label per frame: {n_frames} labels for {p.paths.shape[0]} frames")
        for layer in p.layers:
            if layer.n_frames != n_frames:
                raise ValueError(
                    f"layer {layer.name!r} has {layer.n_frames} frames, particles have {n_frames}"
                )
        if p.notes is not None and len(p.notes) != n_frames:
            raise ValueError(f"panel {p.title!r}: {len(p.notes)} notes for {n_frames} frames")
    for c in charts:
        for x, y, _ in c.cursors:
            if len(x) != n_frames or len(y) != n_frames:
                raise ValueError(f"chart {c.title!r}: a cursor needs one point per frame")


def animated_panels(
    panels: Sequence[Panel],
    labels: Sequence[str],
    *,
    charts: Sequence[Chart] = (),
    title: str = "",
    bounds: tuple[float, float] = (-4.5, 4.5),
    start_frame: int = 0,
    marker_size: float = 5.0,
    font_size: float = FONT["size"],
    uirevision: str = "geoflow",
    frame_ms: int = 80,
    compact: bool = False,
    height: int | None = None,
) -> AnimatedFigure:
    """One figure: square panels with shared axes and charts beside them, one slider and play button.

    Args:
        panels: the square panels, left to right (axes ``x``/``y``, ``x2``/``y2``... all matching).
        labels: F slider labels (e.g. ``"noising t=0.50"``).
        charts: line charts stacked on the right; their cursors follow the frame.
        title: figure title.
        bounds: fixed square axis range (lo, hi) of every panel.
        start_frame: the frame shown before play (single-step mode moves it).
        marker_size: particle marker size in px (larger for a projector).
        font_size: base font size (larger for a projector).
        uirevision: constant across reruns that keep the axes, so zoom and pan survive.
        frame_ms: playback duration of one frame (ms); the slow-motion button uses 5x.
        compact: buttons under a full-width slider (for narrow figures).
        height: figure height in px (default by the number of panels).

    Returns:
        an :class:`AnimatedFigure` with ``len(labels)`` frames named ``"0"..."F-1"``; each frame
        carries every panel's overlays and particles, every chart cursor and the per-frame notes.
    """
    n_frames = len(labels)
    if not panels:
        raise ValueError("an animation needs at least one panel")
    _check(panels, charts, n_frames)
    start = int(np.clip(start_frame, 0, n_frames - 1))
    n_p, n_c = len(panels), len(charts)
    lo, hi = bounds
    layout: dict[str, Any] = {
        "uirevision": uirevision,
        "plot_bgcolor": "white",
        "font": {"size": font_size},
        "title": {"text": title},
    }

    # geometry: panels in a row on the left, charts stacked on the right
    width = 0.64 if n_c else 1.0
    gap = 0.03
    pw = (width - gap * (n_p - 1)) / n_p
    ax = {"range": [lo, hi], "zeroline": False, "showgrid": True, "gridcolor": "#e5e5e5"}
    for i in range(n_p):
        x0 = i * (pw + gap)
        dom = [max(0.0, round(x0, 6)), min(1.0, round(x0 + pw, 6))]
        xa = {**ax, "domain": dom, "constrain": "domain", "anchor": _axis_ref(i, "y")}
        ya = {**ax, "domain": [0.0, 1.0], "anchor": _axis_ref(i, "x")}
        if i == 0:
            ya.update({"scaleanchor": "x", "scaleratio": 1})
        else:  # shared axes: zoom one panel, all follow
            xa["matches"] = "x"
            ya["matches"] = "y"
            ya["showticklabels"] = False
        layout[_axis_name(i, "x")] = xa
        layout[_axis_name(i, "y")] = ya
    ch_gap, ch_top = 0.22, 0.9  # the legend row above the panels spans the figure: charts start lower
    ch_h = (ch_top - ch_gap * (n_c - 1)) / max(n_c, 1)
    static_notes: list[dict[str, Any]] = []
    for j, c in enumerate(charts):
        k = n_p + j
        y1 = ch_top - j * (ch_h + ch_gap)
        layout[_axis_name(k, "x")] = {
            "domain": [width + 0.08, 1.0],
            "anchor": _axis_ref(k, "y"),
            "title": {"text": c.xaxis},
            "gridcolor": "#eeeeee",
            "zeroline": False,
        }
        layout[_axis_name(k, "y")] = {
            "domain": [max(0.0, round(y1 - ch_h, 6)), min(1.0, round(y1, 6))],
            "anchor": _axis_ref(k, "x"),
            "title": {"text": c.yaxis},
            "gridcolor": "#eeeeee",
            "zeroline": False,
        }
        static_notes.append(
            {
                "text": c.title,
                "xref": "paper",
                "yref": "paper",
                "x": width + 0.08,
                "y": y1,
                "xanchor": "left",
                "yanchor": "bottom",
                "yshift": 6,
                "showarrow": False,
                "font": {"size": 0.8 * font_size},
            }
        )

    # traces: per panel its layers then its particles; then chart lines; then chart cursors
    data: list[dict[str, Any]] = []
    moving: list[tuple[int, Any]] = []  # (trace index, f -> trace dict) of what every frame updates
    seen: set[str] = set()
    for i, p in enumerate(panels):
        refs = {"xaxis": _axis_ref(i, "x"), "yaxis": _axis_ref(i, "y")}
        for layer in p.layers:
            tr = layer.base_trace()
            tr.update(layer.trace(start))
            tr.update({**refs, "legendgroup": layer.name, "showlegend": layer.name not in seen})
            seen.add(layer.name)
            moving.append((len(data), layer.trace))
            data.append(tr)
        if p.paths is not None:
            paths = np.asarray(p.paths, dtype=np.float32)
            cols = list(p.colors) if p.colors is not None else position_colors(paths[0])

            def particles(f: int, paths: np.ndarray = paths) -> dict[str, Any]:
                return {"type": "scatter", "mode": "markers", "x": paths[f, :, 0], "y": paths[f, :, 1]}

            tr = particles(start)
            tr.update(
                {
                    **refs,
                    "name": "particles",
                    "legendgroup": "particles",
                    "showlegend": "particles" not in seen,
                    "marker": {"color": cols, "size": marker_size, "opacity": 0.85, "line": {"width": 0}},
                    "hoverinfo": "skip",
                }
            )
            seen.add("particles")
            moving.append((len(data), particles))
            data.append(tr)
    for j, c in enumerate(charts):
        refs = {"xaxis": _axis_ref(n_p + j, "x"), "yaxis": _axis_ref(n_p + j, "y")}
        for line in c.lines:
            data.append({"type": "scatter", "mode": "lines", **line, **refs, "showlegend": False})
    for j, c in enumerate(charts):
        refs = {"xaxis": _axis_ref(n_p + j, "x"), "yaxis": _axis_ref(n_p + j, "y")}
        for cx, cy, style in c.cursors:
            cx32, cy32 = np.asarray(cx, np.float32), np.asarray(cy, np.float32)

            def cursor(f: int, cx32: np.ndarray = cx32, cy32: np.ndarray = cy32) -> dict[str, Any]:
                return {"type": "scatter", "x": cx32[f : f + 1], "y": cy32[f : f + 1]}

            tr = cursor(start)
            tr.update({"mode": "markers", **refs, "showlegend": False, "hoverinfo": "x+y", **style})
            moving.append((len(data), cursor))
            data.append(tr)

    def notes(f: int) -> list[dict[str, Any]]:
        out = list(static_notes)
        for i, p in enumerate(panels):
            lines = []
            if p.title:
                lines.append(f"<b>{p.title}</b>")
            if p.notes is not None and p.notes[f]:
                lines.append(p.notes[f])
            if lines:
                out.append(
                    {
                        "text": "<br>".join(lines),
                        "xref": f"{_axis_ref(i, 'x')} domain",
                        "yref": f"{_axis_ref(i, 'y')} domain",
                        "x": 0.01,
                        "y": 0.99,
                        "xanchor": "left",
                        "yanchor": "top",
                        "align": "left",
                        "showarrow": False,
                        "bgcolor": "rgba(255,255,255,0.8)",
                        "font": {"size": 0.8 * font_size},
                    }
                )
        return out

    idx = [i for i, _ in moving]
    frames = [
        {
            "name": str(f),
            "data": [_jsonable(fn(f)) for _, fn in moving],
            "traces": idx,
            "layout": {"annotations": notes(f)},
        }
        for f in range(n_frames)
    ]
    layout["annotations"] = notes(start)
    steps = [
        {"args": [[str(f)], frame_args(0)], "label": labels[f], "method": "animate"} for f in range(n_frames)
    ]
    big = font_size / FONT["size"]
    layout.update(
        {
            "height": height or {1: 760, 2: 640}.get(n_p, 560),
            "margin": {"l": 50, "r": 20, "t": int(110 * big), "b": int((190 if compact else 150) * big)},
            "legend": {"orientation": "h", "x": 0.0, "y": 1.0, "yanchor": "bottom", "xanchor": "left"},
            "updatemenus": [
                {
                    "type": "buttons",
                    "direction": "left",
                    "x": 0.0,
                    "y": 0.0,
                    "xanchor": "left",
                    "yanchor": "top",
                    "pad": {"t": int((130 if compact else 70) * big), "r": 10},
                    "showactive": False,
                    "font": {"size": 15 * big},
                    "buttons": [
                        {"label": "▶ Play", "method": "animate", "args": [None, frame_args(frame_ms)]},
                        {"label": "Slow", "method": "animate", "args": [None, frame_args(5 * frame_ms)]},
                        {
                            "label": "❚❚ Pause",
                            "method": "animate",
                            "args": [
                                [None],
                                {"frame": {"duration": 0, "redraw": False}, "mode": "immediate"},
                            ],
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
                    "pad": {"t": int(50 * big)},
                    "currentvalue": {"prefix": "", "font": {"size": 18 * big}},
                    "transition": {"duration": 0},
                    "font": {"size": 11 * big},
                }
            ],
        }
    )
    return AnimatedFigure({"data": [_jsonable(tr) for tr in data], "layout": layout, "frames": frames})


def particle_animation(
    paths: np.ndarray,
    labels: Sequence[str],
    *,
    colors: Sequence[str] | None = None,
    layers: Sequence[Layer] = (),
    notes: Sequence[str] | None = None,
    **kwargs: Any,
) -> AnimatedFigure:
    """An animated scatter of particles (F, n, 2) that keep their identity across frames (one panel).

    ``kwargs`` go to :func:`animated_panels` (bounds, title, start_frame, uirevision...).
    """
    paths = np.asarray(paths, dtype=np.float32)
    if paths.ndim != 3 or paths.shape[2] != 2:
        raise ValueError(f"paths must have shape (F, n, 2), got {paths.shape}")
    return animated_panels([Panel(paths, colors, layers, notes=notes)], labels, **kwargs)


def _fmt(v: float) -> str:
    return f"{v:.3f}" if np.isfinite(v) else "n/a"


def agreement_notes(agreement: dict[str, Any], labels: Sequence[str], with_jko: bool) -> list[str]:
    """Per-frame text: the frame and its label, W2 to the JKO path and to p_t, and the floor."""
    n_f = len(labels)
    out = []
    for f in range(n_f):
        parts = [f"frame {f} of {n_f - 1} · {labels[f]}"]
        if agreement:
            w2 = []
            if with_jko:
                w2.append(f"W2 to JKO {_fmt(agreement['w2_jko'][f])}")
            w2.append(f"W2 to exact p_t {_fmt(agreement['w2_exact'][f])}")
            w2.append(f"floor {_fmt(agreement['w2_floor'][f])} (n={agreement['n_eval']})")
            parts.append(" · ".join(w2))
        out.append("<br>".join(parts))
    return out


def agreement_charts(agreement: dict[str, Any], phase: Sequence[str], with_jko: bool) -> list[Chart]:
    """The W2 and free-energy curves along the run, with cursors at the current frame."""
    t = np.asarray(agreement["t"], np.float32)
    ph = np.asarray(phase)
    lines_w2: list[dict[str, Any]] = []
    lines_fe: list[dict[str, Any]] = []
    for name, col in PHASE_COLORS.items():
        k = ph == name
        lines_w2.append(
            {"x": t[k], "y": np.asarray(agreement["w2_exact"], np.float32)[k], "name": f"{name}: to p_t"}
        )
        lines_w2[-1]["line"] = {"color": col, "width": 2}
        if with_jko:
            y = np.asarray(agreement["w2_jko"], np.float32)[k]
            lines_w2.append(
                {"x": t[k], "y": y, "name": f"{name}: to JKO", "line": {"color": col, "dash": "dash"}}
            )
        fe = np.asarray(agreement["free_energy"], np.float32)[k]
        lines_fe.append(
            {"x": t[k], "y": fe, "name": f"{name}: particles", "line": {"color": col, "width": 2}}
        )
    floor = (
        np.asarray(agreement["w2_floor"], np.float32)[ph == "noising"] if (ph == "noising").any() else None
    )
    if floor is not None:
        tk = t[ph == "noising"]
        lines_w2.append({"x": tk, "y": floor, "name": "floor", "line": {"color": "grey", "dash": "dot"}})
    if len(agreement.get("fe_exact", [])):
        lines_fe.append(
            {
                "x": np.asarray(agreement["fe_exact_t"], np.float32),
                "y": np.asarray(agreement["fe_exact"], np.float32),
                "name": "exact",
                "line": {"color": "black", "dash": "dot"},
            }
        )
    dot = {"marker": {"size": 12, "color": "black", "symbol": "circle"}}
    cur_w2 = [(t, np.asarray(agreement["w2_exact"], np.float32), dot)]
    if with_jko:
        ring = {"marker": {"size": 12, "color": "black", "symbol": "circle-open", "line": {"width": 2}}}
        cur_w2.append((t, np.asarray(agreement["w2_jko"], np.float32), ring))
    what = "W2 to p_t (solid)" + (", to JKO (dashed)" if with_jko else "")
    return [
        Chart(f"{what}<br>blue: noising · red: generation · dotted: floor", "", "W2", lines_w2, cur_w2),
        Chart(
            "free energy KL(mu_t || pi)<br>particles (k-NN) · dotted: exact",
            "t",
            "KL (nats)",
            lines_fe,
            [(t, np.asarray(agreement["free_energy"], np.float32), dot)],
        ),
    ]


def flow_animation(
    traj: Any,
    *,
    title: str,
    bounds: tuple[float, float],
    layers: Sequence[Layer] = (),
    color_by_noise: bool = False,
    start_frame: int = 0,
    uirevision: str = "geoflow",
    agreement: dict[str, Any] | None = None,
    charts: bool = False,
    small_multiples: bool = False,
    particles: bool = True,
    **kwargs: Any,
) -> AnimatedFigure:
    """The Flows view of a ``geoflow.run.Trajectory``: particles coloured by x_0 (or x_T), overlays.

    Args:
        traj: the trajectory (``paths`` (F, n, 2), ``labels``, ``phase``, ``data`` and ``noise``).
        layers: overlays (:func:`geoflow.figures.overlay_layer`).
        color_by_noise: colour by the start of generation x_T instead of the data x_0.
        agreement: :func:`geoflow.overlays.frame_agreement` of the run: its numbers at the current
            frame are written in the panel and move with the slider.
        charts: draw the W2 and free-energy curves beside the particles, cursor at the current frame.
        small_multiples: three linked panels, particles | JKO path | exact marginal (shared axes).
        particles: draw the particles (False: the overlays alone, e.g. the JKO path by itself).
        kwargs: to :func:`animated_panels` (font_size, marker_size, frame_ms...).
    """
    anchor = traj.noise if color_by_noise or traj.data is None else traj.data
    colors = position_colors(anchor)
    with_jko = any(layer.role == "JKO path" for layer in layers)
    notes = agreement_notes(agreement or {}, traj.labels, with_jko)
    if small_multiples:
        contour = [layer for layer in layers if layer.role == "exact marginal"]
        jko = [layer for layer in layers if layer.role == "JKO path"]
        rest = [layer for layer in layers if layer.role not in ("exact marginal", "JKO path")]
        panels = [
            Panel(traj.paths, colors, rest, "particles", notes),
            Panel(None, None, jko, "JKO path" if jko else "JKO path (not available)"),
            Panel(None, None, contour, "exact marginal" if contour else "exact marginal (not available)"),
        ]
    else:
        panels = [Panel(traj.paths if particles else None, colors, layers, "", notes)]
    chart_list = agreement_charts(agreement, traj.phase, with_jko) if charts and agreement else []
    return animated_panels(
        panels,
        traj.labels,
        charts=chart_list,
        title=title,
        bounds=bounds,
        start_frame=start_frame,
        uirevision=uirevision,
        **kwargs,
    )


# --------------------------------------------------------------------------- A/B on one timeline
def common_frames(
    times: Sequence[np.ndarray], phases: Sequence[Sequence[str]]
) -> tuple[list[str], np.ndarray]:
    """One timeline for runs with different time grids: noising frames, then generation frames.

    The timeline visits the union of the runs' times of each phase (noising forward in t,
    generation backward). At each time a run shows the latest frame it has reached: while noising,
    its last frame with ``t <= tau``; while generating, its last frame with ``t >= tau`` (a run with
    fewer steps holds its state until its next step). A run that stopped early (diverged) holds its
    last frame.

    Args:
        times: per run, (F_r,) forward time of each frame.
        phases: per run, ``"noising"`` / ``"generation"`` per frame.

    Returns:
        ``(labels, index)``: G labels and the (R, G) frame index of each run at each common frame.
    """
    eps = 1e-9
    labels: list[str] = []
    cols: list[list[int]] = []
    for phase, forward in (("noising", True), ("generation", False)):
        sel = [np.flatnonzero(np.asarray(p) == phase) for p in phases]
        taus = np.unique(
            np.round(np.concatenate([np.asarray(t)[s] for t, s in zip(times, sel, strict=True)]), 9)
        )
        if taus.size == 0:
            continue
        taus = taus if forward else taus[::-1]
        for tau in taus:
            col = []
            for t, s, p in zip(times, sel, phases, strict=True):
                if s.size == 0:  # a run without this phase shows its nearest frame of the other
                    col.append(0 if forward else len(p) - 1)
                    continue
                tt = np.asarray(t)[s]
                ok = np.flatnonzero(tt <= tau + eps) if forward else np.flatnonzero(tt >= tau - eps)
                col.append(int(s[ok[-1]]) if ok.size else int(s[0]))
            cols.append(col)
            labels.append(f"{phase} t={tau:.3f}")
    return labels, np.asarray(cols, dtype=np.int64).T


def comparison_animation(
    trajs: Sequence[Any],
    titles: Sequence[str],
    *,
    bounds: tuple[float, float],
    layers: Sequence[Sequence[Layer]] = (),
    color_by_noise: bool = False,
    title: str = "",
    generation_only: bool = False,
    start_frame: int = 0,
    uirevision: str = "geoflow-ab",
    **kwargs: Any,
) -> AnimatedFigure:
    """Runs side by side in one figure: shared axes, one slider and one play button drive all.

    The runs start from the same data and noise (so the same colours); :func:`common_frames` puts
    them on one timeline. Each panel's note says which step of its own grid it shows.

    Args:
        trajs: the trajectories (A, B, ...).
        titles: one panel title per run (its sampler, N, NFE, quality).
        layers: per run, overlays with each run's own frame count (re-indexed here).
        generation_only: leave out the noising frames (the Projection page's view).
    """
    phases = [list(t.phase) for t in trajs]
    times = [np.asarray(t.times) for t in trajs]
    labels, index = common_frames(times, phases)
    if generation_only:
        keep = [g for g, lab in enumerate(labels) if lab.startswith("generation")]
        labels, index = [labels[g] for g in keep], index[:, keep]
    first = trajs[0]
    anchor = first.noise if color_by_noise or first.data is None else first.data
    colors = position_colors(anchor)
    panels = []
    for r, traj in enumerate(trajs):
        idx = index[r]
        run_layers = [
            Layer(
                ly.name,
                ly.kind,
                xy=None if ly.xy is None else ly.xy[idx],
                z=None if ly.z is None else ly.z[idx],
                grid=ly.grid,
                style=ly.style,
                levels=ly.levels,
                role=ly.role,
            )
            for ly in (layers[r] if r < len(layers) else ())
        ]
        n_gen0 = traj.n_forward
        n_steps = max(len(traj.phase) - n_gen0 - 1, 0)
        notes = [
            f"step {int(i) - n_gen0} of {n_steps} (t={traj.times[int(i)]:.3f})"
            if traj.phase[int(i)] == "generation"
            else f"noising t={traj.times[int(i)]:.3f}"
            for i in idx
        ]
        panels.append(Panel(traj.paths[idx], colors, run_layers, titles[r], notes))
    return animated_panels(
        panels, labels, title=title, bounds=bounds, start_frame=start_frame, uirevision=uirevision, **kwargs
    )


# --------------------------------------------------------------------------- stills
def still_figure(fig: go.Figure, frame: int) -> go.Figure:
    """The figure at one frame, without frames, slider or buttons (for PNG/SVG/GIF/MP4 export).

    Every trace, the frame's notes (annotations) and the title (with the frame's label) are kept.
    """
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
        if raw[f].get("layout"):
            out.update_layout(raw[f]["layout"])
        label = out.layout.sliders[0].steps[f].label if out.layout.sliders else ""
        title = (out.layout.title.text or "") + (f" ({label})" if label else "")
        out.update_layout(title_text=title)
    out.frames = ()
    out.layout.sliders = ()
    out.layout.updatemenus = ()
    return out
