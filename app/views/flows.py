"""Flows (2-D): forward noising and generation as one particle animation, with overlays and side charts."""

from __future__ import annotations

from dataclasses import dataclass

import common as C
import numpy as np
import streamlit as st

from geoflow import figures

COLOR_BY = ("data position x_0", "noise position x_T")
OVERLAYS = ("exact marginal", "JKO path", "velocity field", "x0_hat", "warped grid", "W2 geodesic")


@dataclass(frozen=True)
class Settings:
    run: C.RunSpec
    overlays: tuple[str, ...]
    color_by: str
    frame: int


def controls() -> Settings:
    st.sidebar.header("Flow settings")
    run = C.run_controls()
    st.sidebar.header("Overlays")
    if "overlays" not in st.session_state:  # from the URL: a comma-separated list
        raw = st.query_params.get("overlays", "")
        st.session_state["overlays"] = [o for o in raw.split(",") if o in OVERLAYS]
    ov = st.sidebar.multiselect(
        "draw with the particles",
        OVERLAYS,
        key="overlays",
        help="JKO and W2 geodesic take a few seconds the first time (then cached)",
    )
    if ",".join(ov) != st.query_params.get("overlays", ""):
        st.query_params["overlays"] = ",".join(ov)
    color_by = st.sidebar.radio(
        "colour particles by",
        COLOR_BY,
        key=C.url_state("color_by", COLOR_BY[0], COLOR_BY),
    )
    frame = int(st.session_state.get("frame", 0))
    return Settings(run, tuple(o for o in OVERLAYS if o in ov), color_by, frame)


def compute(s: Settings) -> tuple[C.ScoreSource, C.Trajectory, list[figures.Layer], list[str]] | None:
    got = C.prepare(s.run)
    if got is None:
        return None
    src, traj = got
    layers, notes = ([], [])
    if s.overlays:
        try:
            layers, notes = C.overlay_layers(s.run, src.key, s.overlays, src, traj)
        except (ValueError, RuntimeError) as e:
            notes = [f"overlays failed: {e}"]
    return src, traj, layers, notes


def render(s: Settings, result: tuple | None) -> None:
    if result is None:
        return
    src, traj, layers, notes = result
    for n in notes:
        st.info(n)
    if traj.error:
        st.error(f"The sampler diverged: {traj.error} The frames up to that step are shown.")
    if s.run.projection and s.run.sampler != "euler_maruyama":
        st.warning(
            "The projection step belongs to Euler-Maruyama (predict-project); this sampler ignores it."
        )
    if src.sde.name == "vp" and s.run.sampler == "annealed_langevin":
        st.warning(
            "Annealed Langevin is meant for the VE SDE; on VP it runs but is not the standard pairing."
        )
    fig = C.flow_figure(s.run, src, traj, layers, s.color_by.startswith("noise"), s.frame)
    n_f = traj.paths.shape[0]
    st.plotly_chart(fig, theme=None, key="flow_chart", config={"displaylogo": False})
    step_controls(n_f, traj)
    cols = st.columns(4)
    cols[0].metric("steps N", s.run.steps)
    cols[1].metric("NFE", traj.nfe)
    cols[2].metric("frames", n_f)
    cols[3].metric("particles", traj.paths.shape[1])
    st.caption(
        f"Forward noising is simulated (Euler-Maruyama on {C.FWD_STEPS} uniform steps) from data; "
        "generation starts "
        "from its end point x_T, the same initial noise for every sampler, step count and projection setting "
        f"(seed {s.run.seed}). Grid spacing: "
        f"{C.reverse_grid(s.run, src.sde)[:3].numpy().round(3).tolist()}..."
    )
    side_charts(s, src, traj)
    with st.expander("Export (PNG / SVG / GIF / MP4 / CSV)"):
        frame = int(st.session_state.get("frame", 0))
        C.export_panel(
            fig,
            traj,
            frame,
            C.plot_bounds(C.resolve_density(s.run.density), src.sde),
            figures.paths_csv(traj.paths, traj.times, traj.phase),
            "geoflow_flow",
        )


def step_controls(n_f: int, traj: C.Trajectory) -> None:
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
def side_charts(s: Settings, src: C.ScoreSource, traj: C.Trajectory) -> None:
    if not st.toggle("side charts: W2 to the exact path, free energy, W2 to data", key="side", value=False):
        return
    try:
        m = C.path_metrics(s.run, src.key, src, traj)
    except (ValueError, RuntimeError) as e:
        C.show_error(e, "path metrics")
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
        figures.table_csv(
            {
                k: m[k]
                for k in ("frame", "phase", "t", "w2_exact", "w2_floor", "free_energy", "free_energy_exact")
            }
        ),
        file_name="geoflow_path_metrics.csv",
        key="metrics_csv",
    )


settings = controls()
C.sync_url()
st.title("Flows: noising and generation as particles")
render(settings, compute(settings))
