"""Flows (2-D): forward noising and generation as one particle animation, with overlays and side charts."""

from __future__ import annotations

from dataclasses import dataclass

import cache
import numpy as np
import sources
import state
import streamlit as st
import widgets as W

from geoflow import export, figures
from geoflow.overlays import OVERLAYS, plot_bounds
from geoflow.registry import get_sampler
from geoflow.run import FWD_STEPS, RunSpec, ScoreSource, Trajectory

PAGE = "flows"
COLOR_BY = ("data position x_0", "noise position x_T")


@dataclass(frozen=True)
class Settings:
    run: RunSpec
    project: bool  # the projection toggle (it changes the sampler only for Euler-Maruyama)
    overlays: tuple[str, ...]
    color_by: str
    frame: int


def controls() -> Settings:
    st.sidebar.header("Flow settings")
    run = W.run_controls(PAGE)
    st.sidebar.header("Overlays")
    key = state.skey(PAGE, "overlays")
    if key not in st.session_state:  # from the URL: a comma-separated list
        raw = st.query_params.get("overlays", "")
        asked = [o for o in raw.split(",") if o]
        bad = [o for o in asked if o not in OVERLAYS]
        if bad:
            state.notice(
                f"URL setting overlays: unknown {', '.join(bad)!s} ignored; valid: {', '.join(OVERLAYS)}"
            )
        st.session_state[key] = [o for o in asked if o in OVERLAYS]
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
    frame = int(st.session_state.get("frame", 0))
    project = bool(state.get(PAGE, "project", False))
    return Settings(run, project, tuple(o for o in OVERLAYS if o in ov), color_by, frame)


def compute(s: Settings) -> tuple[ScoreSource, object, Trajectory, list[figures.Layer], list[str]] | None:
    got = W.prepare(s.run)
    if got is None:
        return None
    src, density, traj = got
    layers: list[figures.Layer] = []
    notes: list[str] = []
    if s.overlays:
        try:
            arrays, notes = cache.overlay_arrays(
                s.overlays, s.run, sources.density_key(s.run.data), src.key, density, src, traj
            )
            layers = [figures.overlay_layer(a) for a in arrays]
        except W.APP_ERRORS as e:
            notes = [f"overlays failed: {e}"]
    return src, density, traj, layers, notes


def flow_figure(s: Settings, src: ScoreSource, density, traj: Trajectory, layers) -> figures.AnimatedFigure:
    """The animated figure of a trajectory (particles coloured by x_0 or by x_T)."""
    return figures.flow_animation(
        traj,
        title=flow_title(density.name, traj, s.run.steps),
        bounds=plot_bounds(density, src.sde),
        layers=layers,
        color_by_noise=s.color_by.startswith("noise"),
        start_frame=s.frame,
        uirevision=f"flows-{s.run.data}-{s.run.sde}",
    )


def flow_title(name: str, traj: Trajectory, steps: int) -> str:
    return f"{name}: {traj.sampler_label}, N={steps}, NFE={traj.nfe} ({traj.source_label})"


def render(s: Settings, result: tuple | None) -> None:
    if result is None:
        return
    src, density, traj, layers, notes = result
    for n in notes:
        st.info(n)
    if traj.error:
        st.error(f"The sampler diverged: {traj.error} The frames up to that step are shown.")
    info = get_sampler(s.run.sampler)
    if s.project and info.family != "predict_project":
        st.warning(
            "The projection step belongs to Euler-Maruyama (predict-project); this sampler ignores it."
        )
    if src.sde.name not in info.sdes:
        st.warning(
            f"{info.label} is meant for the {'/'.join(x.upper() for x in info.sdes)} SDE; on "
            f"{src.sde.name.upper()} it runs but is not the standard pairing."
        )
    fig = flow_figure(s, src, density, traj, layers)
    n_f = traj.paths.shape[0]
    st.plotly_chart(fig, theme=None, key="flow_chart", config={"displaylogo": False})
    step_controls(n_f, traj)
    cols = st.columns(4)
    cols[0].metric("steps N", s.run.steps)
    cols[1].metric("NFE", traj.nfe)
    cols[2].metric("frames", n_f)
    cols[3].metric("particles", traj.paths.shape[1])
    st.caption(
        f"Forward noising is simulated (Euler-Maruyama on {FWD_STEPS} uniform steps) from data; "
        "generation starts "
        "from its end point x_T, the same initial noise for every sampler, step count and projection setting "
        f"(seed {s.run.seed}). Time grid: {traj.spacing}, "
        f"{traj.ts[:3].round(3).tolist()}..."
    )
    side_charts(s, src, density, traj)
    with st.expander("Export (PNG / SVG / GIF / MP4 / CSV)"):
        frame = int(st.session_state.get("frame", 0))
        W.export_panel(
            fig,
            traj,
            frame,
            plot_bounds(density, src.sde),
            export.paths_csv(traj.paths, traj.times, traj.phase),
            "geoflow_flow",
        )


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
        f"single-step mode: frame {st.session_state['frame']} of {n_f - 1} "
        f"({traj.labels[st.session_state['frame']]}); "
        "▶ Play and Slow run in the browser."
    )


@st.fragment
def side_charts(s: Settings, src: ScoreSource, density, traj: Trajectory) -> None:
    if not st.toggle("side charts: W2 to the exact path, free energy, W2 to data", key="side", value=False):
        return
    try:
        m = cache.path_metrics(s.run, sources.density_key(s.run.data), src.key, density, src, traj)
    except W.APP_ERRORS as e:
        W.show_error(e, "path metrics")
        return
    t = np.asarray(m["t"])
    phase = np.asarray(m["phase"])
    cols = st.columns(3)
    series_w2, series_fe = {}, {}
    for ph in ("noising", "generation"):
        k = phase == ph
        series_w2[ph] = (t[k], np.asarray(m["w2_exact"])[k])
        series_fe[ph] = (t[k], np.asarray(m["free_energy"])[k])
    fig1 = figures.line_chart(
        t[phase == "generation"],
        {"generation": series_w2["generation"][1]},
        title="W2 to the exact marginal",
        xaxis="t",
        yaxis="W2",
        floor=float(np.mean(m["w2_floor"])),
    )
    fig1.add_scatter(
        x=series_w2["noising"][0], y=series_w2["noising"][1], name="noising", mode="lines+markers"
    )
    cols[0].plotly_chart(fig1, theme=None, key="w2_chart")
    fe = {"particles (generation)": series_fe["generation"][1]}
    fig2 = figures.line_chart(
        t[phase == "generation"], fe, title="free energy KL(mu_t || pi)", xaxis="t", yaxis="KL (nats)"
    )
    fig2.add_scatter(
        x=series_fe["noising"][0], y=series_fe["noising"][1], name="particles (noising)", mode="lines+markers"
    )
    if np.isfinite(m["free_energy_exact"]).any():
        fig2.add_scatter(x=t, y=m["free_energy_exact"], name="exact marginal", mode="markers")
    cols[1].plotly_chart(fig2, theme=None, key="fe_chart")
    cols[2].metric(
        "W2 of the samples to data", f"{m['w2_data']:.3f}", help=f"exact W2 (POT), n = {m['n_eval']}"
    )
    cols[2].metric("floor (data vs data)", f"{m['w2_data_floor']:.3f}")
    cols[2].caption(
        "W2 at this n cannot rank close samplers (method.md section 4); the floor is what two "
        "exact samples measure."
    )
    cols[2].download_button(
        "CSV of these numbers",
        export.table_csv(
            {
                k: m[k]
                for k in ("frame", "phase", "t", "w2_exact", "w2_floor", "free_energy", "free_energy_exact")
            }
        ),
        file_name="geoflow_path_metrics.csv",
        key="metrics_csv",
    )


settings = controls()
state.sync_url()
st.title("Flows: noising and generation as particles")
state.show_notices()
render(settings, compute(settings))
