"""Flows (2-D): forward noising and generation as one particle animation, with overlays and numbers.

The gradient-flow overlay (Theorems 1 and 2): the exact marginal p_t as iso-density lines, the JKO
path as hollow markers (interpolated between keyframes), and W2 of the particles to both at the
current frame, carried in the figure so play and the slider move them. Optional: W2 and free-energy
curves beside the chart, linked small multiples (particles | JKO path | exact marginal), an A/B
comparison on the same noise (:mod:`comparison`), the presentation view (``?present=1``) and the
session's recent runs (:mod:`history`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, replace

import cache
import comparison
import history
import live_chart
import numpy as np
import presentation
import sources
import state
import streamlit as st
import widgets as W

from geoflow import animation, export, figures
from geoflow.overlays import OVERLAYS, plot_bounds
from geoflow.registry import get_sampler
from geoflow.run import FWD_STEPS, RunSpec, Trajectory

PAGE = "flows"
COLOR_BY = ("data position x_0", "noise position x_T")
VIEWS = ("one panel", "small multiples: particles | JKO path | exact p_t")
LOOK_FOR = (
    "What to look for: while noising, the particles, the JKO circles and the p_t lines coincide "
    "(Theorem 1: the same gradient flow of KL to N(0, I)); while generating, the sampler's particles "
    "come back along the same path in reverse (Theorem 2); with few steps, watch where they leave it: "
    "the W2 numbers in the chart rise above their floor."
)
LOOK_FOR_PLAIN = (
    "What to look for: particles keep their colour (their starting position) along simulated paths. "
    "Turn on the overlays 'exact marginal' and 'JKO path' to see the gradient-flow path they follow."
)
LOOK_FOR_AB = (
    "What to look for: both runs start from the same x_T; where the panels differ, only the sampler's "
    "settings are to blame. Compare how early each one leaves the exact path, and the final quality below."
)


@dataclass(frozen=True)
class Settings:
    run: RunSpec
    project: bool  # the projection toggle (it changes the sampler only for Euler-Maruyama)
    overlays: tuple[str, ...]
    color_by: str
    frame: int
    view: str = VIEWS[0]
    curves: bool = False
    jko_alone: bool = False
    b: RunSpec | None = None  # run B of an A/B comparison


def controls() -> Settings:
    st.sidebar.header("Flow settings")
    run = W.run_controls(PAGE)
    st.sidebar.header("Overlays")
    key = state.url_list_state(PAGE, "overlays", OVERLAYS)  # from the URL: a comma-separated list
    ov = st.sidebar.multiselect(
        "draw with the particles",
        OVERLAYS,
        key=key,
        help="JKO and W2 geodesic take a few seconds the first time (then cached)",
    )
    if ",".join(ov) != st.query_params.get("overlays", ""):
        st.query_params["overlays"] = ",".join(ov)
    color_by = st.sidebar.radio(
        "colour particles by", COLOR_BY, key=state.url_state(PAGE, "color_by", COLOR_BY[0], COLOR_BY)
    )
    st.sidebar.header("View")
    view = st.sidebar.radio(
        "layout",
        VIEWS,
        key=state.url_state(PAGE, "view", VIEWS[0], VIEWS),
        help="small multiples: three linked panels with shared axes and one slider (turns on both overlays)",
    )
    curves = st.sidebar.toggle(
        "W2 and free-energy curves beside the chart",
        key=state.url_state(PAGE, "curves", False),
        help="exact W2 at every frame on a 200-particle subsample; a cursor follows the slider",
    )
    jko_alone = st.sidebar.toggle(
        "JKO particles alone (hide the diffusion's)",
        key=state.url_state(PAGE, "jko_alone", False),
        disabled="JKO path" not in ov,
    )
    st.sidebar.header("A/B comparison")
    compare = st.sidebar.toggle(
        "compare with a run B (same noise)",
        key=state.url_state(PAGE, "compare", False),
        help="B starts from the same data, x_T and Brownian path; any sampler setting may differ",
    )
    b = comparison.b_controls(PAGE, run, st.sidebar) if compare else None
    frame = int(st.session_state.get("frame", 0))
    project = bool(state.get(PAGE, "project", False))
    chosen = tuple(o for o in OVERLAYS if o in ov)
    if view == VIEWS[1]:
        chosen = tuple(o for o in OVERLAYS if o in (*chosen, "exact marginal", "JKO path"))
    return Settings(run, project, chosen, color_by, frame, view, curves, jko_alone and "JKO path" in ov, b)


def compute(s: Settings) -> dict | None:
    """The run (and run B), its overlays and, when they are drawn, its per-frame agreement numbers."""
    if s.b is not None:
        got = comparison.compute([("A", s.run), ("B", s.b)], s.overlays)
        if got is None:
            return None
        density, sides = got
        return {"density": density, "sides": sides}
    got = W.prepare(s.run)
    if got is None:
        return None
    src, density, traj = got
    dk = sources.density_key(s.run.data)
    layers: list[figures.Layer] = []
    notes: list[str] = []
    jko = None
    if s.overlays:
        try:
            arrays, notes = cache.overlay_arrays(s.overlays, s.run, dk, src.key, density, src, traj)
            layers = [figures.overlay_layer(a) for a in arrays]
            jko = next((a.xy for a in arrays if a.role == "JKO path"), None)
        except W.APP_ERRORS as e:
            notes = [f"overlays failed: {e}"]
    agreement = None
    if s.curves or {"exact marginal", "JKO path"} & set(s.overlays):
        try:
            agreement = cache.frame_agreement(s.run, dk, src.key, density, src, traj, jko)
        except W.APP_ERRORS as e:
            notes.append(f"W2 numbers unavailable: {e}")
    return {
        "src": src,
        "density": density,
        "traj": traj,
        "layers": layers,
        "notes": notes,
        "agreement": agreement,
    }


def toggled_spec(s: Settings) -> RunSpec | None:
    """The run the projection toggle would show next (for the idle-time prefetch), if it changes the run."""
    if s.run.sampler == "predict_project":
        return replace(s.run, sampler="euler_maruyama", strength=None)
    if s.run.sampler == "euler_maruyama":
        return replace(s.run, sampler="predict_project", strength=float(state.get(PAGE, "strength", 1.0)))
    return None


def flow_figure(s: Settings, r: dict) -> figures.AnimatedFigure:
    """The animated figure of a run: particles coloured by x_0 or by x_T, overlays, numbers per frame."""
    src, density, traj = r["src"], r["density"], r["traj"]
    return animation.flow_animation(
        traj,
        title=flow_title(density.name, traj, s.run.steps),
        bounds=plot_bounds(density, src.sde),
        layers=r["layers"],
        color_by_noise=s.color_by.startswith("noise"),
        start_frame=s.frame,
        uirevision=uirevision(s),
        agreement=r["agreement"],
        charts=s.curves,
        small_multiples=s.view == VIEWS[1],
        particles=not s.jko_alone,
        **presentation.figure_style(),
    )


def uirevision(s: Settings) -> str:
    """Constant while the axes stay (same data, SDE and layout): zoom survives every other change."""
    return f"flows-{s.run.data}-{s.run.sde}-{s.view}-{s.curves}-{s.b is not None}"


def flow_title(name: str, traj: Trajectory, steps: int) -> str:
    return f"{name}: {traj.sampler_label}, N={steps}, NFE={traj.nfe} ({traj.source_label})"


def render(s: Settings, r: dict | None) -> None:
    if r is None:
        return
    if "sides" in r:
        render_comparison(s, r)
        return
    src, density, traj = r["src"], r["density"], r["traj"]
    present = presentation.presenting()
    for n in r["notes"]:
        st.info(n)
    if traj.error:
        st.error(f"The sampler diverged: {traj.error} The frames up to that step are shown.")
    info = get_sampler(s.run.sampler)
    if s.project and info.family != "predict_project" and not present:
        st.warning(
            "The projection step belongs to Euler-Maruyama (predict-project); this sampler ignores it."
        )
    if src.sde.name not in info.sdes and not present:
        st.warning(
            f"{info.label} is meant for the {'/'.join(x.upper() for x in info.sdes)} SDE; on "
            f"{src.sde.name.upper()} it runs but is not the standard pairing."
        )
    style = tuple(sorted(presentation.figure_style().items()))
    # by value: Settings is redefined at every script run, so its instances never compare equal
    key = ("flows", dataclasses.astuple(s), sources.density_key(s.run.data), src.key, style)
    fig = cache.figure(key, lambda: flow_figure(s, r))  # built and serialised once for every session
    n_f = traj.paths.shape[0]
    live_chart.live_chart(fig, key="flow_chart", config={"displaylogo": False})
    gradient_flow = {"exact marginal", "JKO path"} & set(s.overlays)
    st.caption(LOOK_FOR if gradient_flow else LOOK_FOR_PLAIN)
    if present:
        return
    step_controls(n_f, traj)
    q = cache.final_quality(
        s.run, sources.density_key(s.run.data), src.key, density, traj.final, bool(traj.error)
    )
    cols = st.columns(5)
    cols[0].metric("steps N", s.run.steps)
    cols[1].metric("NFE", traj.nfe)
    cols[2].metric("particles", traj.paths.shape[1])
    cols[3].metric("W2 to data", f"{q['w2']:.3f}", help=f"floor {q['w2_floor']:.3f} (data vs data, same n)")
    if np.isfinite(q["kl"]):
        cols[4].metric("KL (k-NN)", f"{q['kl']:.3f}", help=f"floor {q['kl_floor']:.3f} (true samples)")
    history.record(PAGE, f"{traj.sampler_label}, N={s.run.steps}, NFE={traj.nfe} · W2 {q['w2']:.3f}", q)
    st.caption(
        f"Forward noising is simulated (Euler-Maruyama on {FWD_STEPS} uniform steps) from data; "
        "generation starts "
        "from its end point x_T, the same initial noise for every sampler, step count and projection setting "
        f"(seed {s.run.seed}). Time grid: {traj.spacing}, "
        f"{traj.ts[:3].round(3).tolist()}... W2 to data: exact W2 (POT) of the final samples, with the "
        "floor two exact samples measure."
    )
    with st.expander("Export (PNG / SVG / GIF / MP4 / CSV): what the chart shows"):
        frame = int(st.session_state.get("frame", 0))
        W.export_panel(
            fig,
            frame,
            # made on click (a callable): the CSV of every frame costs ~0.3 s, too much for every rerun
            functools.partial(export.paths_csv, traj.paths, traj.times, traj.phase),
            "geoflow_flow",
        )
        if r["agreement"]:
            a = r["agreement"]
            st.download_button(
                "CSV of the per-frame W2 and free energy",
                functools.partial(
                    export.table_csv,
                    {"frame": list(range(n_f)), "phase": traj.phase}
                    | {k: a[k] for k in ("t", "w2_exact", "w2_jko", "w2_floor", "free_energy")},
                ),
                file_name="geoflow_agreement.csv",
                key="agreement_csv",
            )


def render_comparison(s: Settings, r: dict) -> None:
    """A and B side by side: one figure, one slider; each run's NFE and quality under its panel."""
    sides = r["sides"]
    fig = comparison.figure(
        r["density"],
        sides,
        color_by_noise=s.color_by.startswith("noise"),
        title=f"{r['density'].name}: A vs B on the same noise (seed {s.run.seed})",
        uirevision=uirevision(s),
        **presentation.figure_style(),
    )
    live_chart.live_chart(fig, key="flow_chart", config={"displaylogo": False})
    st.caption(LOOK_FOR_AB)
    if presentation.presenting():
        return
    comparison.quality_columns(sides)
    a, b = sides
    label = f"A/B: {a.traj.sampler_label} N={a.spec.steps} vs {b.traj.sampler_label} N={b.spec.steps}"
    history.record(PAGE, label, {"A": a.quality, "B": b.quality})
    st.caption(
        f"Both runs start from the same data and x_T and use the same Brownian path (seed {s.run.seed}); "
        "each panel holds its last step until the common slider reaches its next one. "
        + ("" if comparison.same_start(sides) else "Warning: the starts differ.")
    )
    with st.expander("Export (PNG / SVG / GIF / MP4): what the chart shows"):
        W.export_panel(fig, int(st.session_state.get("frame", 0)), None, "geoflow_ab")


def step_controls(n_f: int, traj: Trajectory) -> None:
    """Single-step mode: move the frame shown (before play) one step at a time."""
    st.session_state["frame"] = int(np.clip(st.session_state.get("frame", 0), 0, n_f - 1))
    c1, c2, c3 = st.columns([1, 1, 6])
    if c1.button("◀ step", key="step_back"):
        st.session_state["frame"] = max(0, st.session_state["frame"] - 1)
        st.rerun()
    if c2.button("step ▶", key="step_fwd"):
        st.session_state["frame"] = min(n_f - 1, st.session_state["frame"] + 1)
        st.rerun()
    c3.caption(
        "single-step mode: ◀ step / step ▶ set the frame the chart starts from; the frame number, its "
        "time and the W2 numbers are written in the chart and follow its slider. ▶ Play and Slow run "
        "in the browser."
    )


settings = controls()
state.sync_url()
if presentation.presenting():
    presentation.apply()
else:
    st.title("Flows: noising and generation as particles")
state.show_notices()
render(settings, compute(settings))
if not presentation.presenting():
    history.panel(PAGE)  # after the run is recorded: the list includes the one shown
cache.prefetch_view(PAGE, settings.run, toggled_spec(settings))
