"""Train your own: draw, upload or generate 2-D points; train a score model in the background."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass

import numpy as np
import sources
import state
import streamlit as st
import widgets as W
from training import GENERATORS, MAX_TRAIN_STEPS, Job, model_bytes, parse_text_points, run_job, sklearn_points

from geoflow import export, figures
from geoflow.densities import MAX_POINTS, MIN_POINTS, PointCloud, read_points_csv, validate_points

DRAW_GRID = 48


def draw_grid() -> np.ndarray:
    g = np.linspace(-3.5, 3.5, DRAW_GRID)
    gx, gy = np.meshgrid(g, g)
    return np.stack([gx.ravel(), gy.ravel()], 1)


def drawn_points(selection: dict, seed: int) -> np.ndarray:
    """Grid points inside the user's lasso / box selections, jittered inside their cells."""
    idx = sorted({int(i) for i in selection.get("point_indices", [])})
    if not idx:
        raise ValueError("the drawing is empty: lasso or box-select a region of the grid first")
    pts = draw_grid()[idx]
    cell = 7.0 / (DRAW_GRID - 1)
    rng = np.random.default_rng(seed)
    reps = max(1, int(np.ceil(400 / len(pts))))
    pts = np.repeat(pts, reps, 0) + rng.uniform(-cell / 2, cell / 2, (len(pts) * reps, 2))
    return pts


def add_density(name: str, points: np.ndarray) -> None:
    dens = PointCloud(points, name=name)
    dens.uid = sources.new_id()  # cache keys tell this session's "my_data" from another session's
    sources.user_densities()[name] = dens
    st.session_state["train_density"] = name
    if dens.message:
        st.warning(dens.message)
    st.success(f"density {sources.USER_PREFIX}{name} created from {len(points)} points; pick it on any page")


# --------------------------------------------------------------------------- page
@dataclass(frozen=True)
class Settings:
    source: str
    name: str


def controls() -> Settings:
    st.sidebar.header("Your data")
    source = st.sidebar.radio("points from", ("generator", "draw", "upload CSV", "type"), key="data_source")
    name = st.sidebar.text_input("name", value="my_data", key="data_name", max_chars=30).strip() or "my_data"
    return Settings(source, name)


def data_panel(s: Settings) -> None:
    if s.source == "generator":
        c = st.columns(4)
        kind = c[0].selectbox("scikit-learn generator", GENERATORS, key="gen_kind")
        n = c[1].number_input("points", MIN_POINTS, MAX_POINTS, 500, step=100, key="gen_n")
        noise = c[2].number_input("noise", 0.0, 1.0, 0.05, step=0.01, key="gen_noise")
        seed = c[3].number_input("seed", 0, 10_000, 0, key="gen_seed")
        if st.button("make density", key="gen_go"):
            add_density(s.name, sklearn_points(kind, int(n), float(noise), int(seed)))
    elif s.source == "draw":
        st.caption(
            "Draw with the lasso or box tool of the chart (toolbar at its top right); several "
            "selections add up."
        )
        g = draw_grid()
        fig = figures.scatter_panel(
            {"grid": g}, title="select the region your data fills", bounds=(-3.7, 3.7)
        )
        fig.update_traces(marker={"size": 6, "color": "rgba(120,120,200,0.35)"})
        fig.update_layout(dragmode="lasso", height=520)
        event = st.plotly_chart(
            fig, theme=None, key="draw_chart", on_select="rerun", selection_mode=("lasso", "box")
        )
        sel = event.get("selection", {}) if event else {}
        n_sel = len(sel.get("point_indices", []))
        st.write(f"{n_sel} grid cells selected")
        if st.button("make density from the drawing", key="draw_go"):
            try:
                add_density(s.name, drawn_points(sel, 0))
            except ValueError as e:
                W.show_error(e)
    elif s.source == "upload CSV":
        up = st.file_uploader(
            f"CSV with two numeric columns x, y ({MIN_POINTS} to any number of rows; more than "
            f"{MAX_POINTS} are subsampled)",
            type=["csv", "txt"],
            key="upload",
        )
        if up is not None:
            try:
                pts = read_points_csv(io.BytesIO(up.getvalue()))
                add_density(s.name, pts)
            except ValueError as e:
                W.show_error(e, f"could not read {up.name}")
    else:
        text = st.text_area(
            "one 'x, y' pair per line", height=160, key="points_text", placeholder="0.1, 0.2\n-1.0, 1.5\n..."
        )
        if st.button("make density from the text", key="text_go"):
            try:
                add_density(s.name, parse_text_points(text))
            except ValueError as e:
                W.show_error(e)


def preview() -> None:
    dens = sources.user_densities()
    if not dens:
        st.info("No density of yours yet: make one above.")
        return
    name = st.selectbox("your densities", list(dens), key="train_density")
    d = dens[name]
    validate_points(d.points)
    fig = figures.scatter_panel(
        {name: d.points},
        title=f"{name}: {len(d.points)} points (kernel density, bandwidth {d.bandwidth:.3f})",
        bounds=d.bounds(),
    )
    st.plotly_chart(fig, theme=None, key="preview_chart")
    st.download_button(
        "CSV of these points",
        export.table_csv({"x": d.points[:, 0].tolist(), "y": d.points[:, 1].tolist()}),
        file_name=f"{name}.csv",
        key="points_csv",
    )
    train_panel(name)


def train_panel(name: str) -> None:
    st.subheader("Train a score model")
    c = st.columns(4)
    steps = c[0].number_input(
        f"training steps (at most {MAX_TRAIN_STEPS})", 100, MAX_TRAIN_STEPS, 3000, step=500, key="train_steps"
    )
    width = c[1].select_slider("network width", [64, 128, 256], 128, key="train_width")
    sde_name = c[2].radio("SDE", ("vp", "ve"), horizontal=True, key="train_sde", format_func=str.upper)
    with_proj = c[3].toggle("also train the projection network", key="train_proj")
    job: Job | None = st.session_state.get("job")
    busy = job is not None and not job.done
    if st.button("train", key="train_go", disabled=busy, type="primary"):
        dens = sources.user_densities()[name]
        job = Job(name, int(steps), bool(with_proj))
        st.session_state["job"] = job
        threading.Thread(target=run_job, args=(job, dens.points, sde_name, int(width)), daemon=True).start()
    if st.session_state.get("job") is not None:
        job_status()
    mine = sources.user_models().get(name)
    if mine is not None:
        s = mine["summary"]
        st.success(
            f"trained: {s['steps']} steps, loss {s['loss']:.4f}{' (stopped early)' if s['stopped'] else ''}. "
            f"Pick density '{sources.USER_PREFIX}{name}' on the Flows or Projection page "
            "(score: auto or session)."
        )
        cols = st.columns(3)
        if cols[2].button("open it on the Flows page", key="goto_flows", type="primary"):
            st.session_state["goto." + state.skey("flows", "density")] = sources.USER_PREFIX + name
            st.session_state["goto." + state.skey("flows", "sde")] = mine["model"].sde.name
            st.switch_page(str(state.ROOT / "app" / "views" / "flows.py"))
        cols[0].download_button(
            "score model (.safetensors)",
            model_bytes(mine["model"]),
            file_name=f"{name}-{mine['model'].sde.name}.safetensors",
            key="dl_model",
        )
        if mine.get("projection") is not None:
            cols[1].download_button(
                "projection model (.safetensors)",
                model_bytes(mine["projection"]),
                file_name=f"{name}-proj.safetensors",
                key="dl_proj",
            )


@st.fragment(run_every=1.0)
def job_status() -> None:
    """Polls the background job once a second: only this panel reruns, the page stays responsive."""
    job: Job | None = st.session_state.get("job")
    if job is None:
        return
    if job.done:
        if job.error:
            st.error(f"training failed: {job.error}")
        elif job.result is not None and job.name in sources.user_densities():
            sources.user_models()[job.name] = job.result
            st.session_state["job"] = None
            st.rerun(scope="app")
        return
    st.progress(
        min(job.progress, 1.0),
        text=f"{job.phase}: {100 * job.progress:.0f}% (loss {job.loss:.4f}), "
        f"{time.time() - job.started:.0f} s",
    )
    if st.button("stop", key="train_stop"):
        job.stop.set()


settings = controls()
st.title("Train your own density")
data_panel(settings)
preview()
