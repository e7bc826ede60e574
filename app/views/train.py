"""Train your own: draw, upload, type or generate 2-D points (or a JSON mixture); train a score model.

Training runs in the background (:mod:`training`): queued behind at most two others, stopped when
this session ends. Names and file names the user gives are shown as plain text.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import sources
import state
import streamlit as st
import training as T
import widgets as W
from training import GENERATORS, MAX_TRAIN_STEPS, Job, model_bytes, parse_text_points, sklearn_points

from geoflow import export, figures
from geoflow.densities import (
    MAX_POINTS,
    MIN_POINTS,
    GaussianMixture,
    PointCloud,
    read_points_csv,
    validate_points,
)

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


def add_density(name: str, points: np.ndarray | GaussianMixture) -> None:
    """Keep a density in this session: a point cloud (its kernel density) or a typed / uploaded mixture."""
    dens = points if isinstance(points, GaussianMixture) else PointCloud(points, name=name)
    dens.uid = sources.new_id()  # cache keys tell this session's "my_data" from another session's
    sources.user_densities()[name] = dens
    st.session_state["train_density"] = name
    if getattr(dens, "message", ""):
        st.warning(state.plain(dens.message))
    what = (
        f"{len(points)} points"
        if not isinstance(points, GaussianMixture)
        else f"a mixture of {int(dens.weights.numel())} Gaussians"
    )
    st.success(state.plain(f"density {sources.USER_PREFIX}{name} created from {what}; pick it on any page"))


def read_upload(name: str, raw: bytes, density_name: str) -> np.ndarray | GaussianMixture:
    """An uploaded CSV of points or JSON mixture spec, in any common text encoding (or a clear refusal)."""
    text, enc = T.decode_text(raw, repr(name))
    if enc not in ("utf-8", "ascii"):
        st.info(state.plain(f"{name} read as {enc} text"), icon=":material/info:")
    if T.looks_like_json(name, text):
        return T.parse_mixture_text(text, density_name)
    return read_points_csv(text.encode("utf-8"))


# --------------------------------------------------------------------------- page
@dataclass(frozen=True)
class Settings:
    source: str
    name: str


SOURCES = ("generator", "draw", "upload CSV", "type", "JSON mixture")  # the upload also takes a JSON spec
MIXTURE_EXAMPLE = (
    '{"weights": [0.5, 0.5],\n "means": [[-2, 0], [2, 0]],\n'
    ' "covs": [[[0.3, 0], [0, 0.3]], [[0.3, 0], [0, 0.3]]]}'
)


def controls() -> Settings:
    st.sidebar.header("Your data")
    source = st.sidebar.radio("points from", SOURCES, key="data_source")
    typed = st.sidebar.text_input(
        "name",
        value="my_data",
        key="data_name",
        max_chars=T.NAME_MAX,
        help="letters, digits, spaces, _ . - (other characters become _)",
    )
    name, note = T.safe_name(typed)
    if note:
        st.sidebar.caption(state.plain(note))
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
    elif s.source == SOURCES[2]:
        up = st.file_uploader(
            f"CSV with two numeric columns x, y ({MIN_POINTS} to any number of rows; more than "
            f"{MAX_POINTS} are subsampled), or a JSON mixture spec (weights, means, covs). UTF-8, "
            "UTF-16 and Latin-1 text are read.",
            type=["csv", "txt", "json"],
            key="upload",
        )
        if up is not None:
            try:
                add_density(s.name, read_upload(up.name, up.getvalue(), s.name))
            except ValueError as e:
                W.show_error(e, f"could not read {up.name}")
    elif s.source == SOURCES[4]:
        text = st.text_area(
            "a Gaussian mixture as JSON: weights (summing to 1), means [x, y], covariances [[a, b], [b, c]]",
            value=MIXTURE_EXAMPLE,
            height=160,
            key="mixture_text",
            max_chars=T.MAX_SPEC_CHARS,
        )
        if st.button("make density from the JSON", key="json_go"):
            try:
                add_density(s.name, T.parse_mixture_text(text, s.name))
            except ValueError as e:
                W.show_error(e, "could not read the JSON mixture")
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
    pts = validate_points(T.training_points(d))
    what = (
        f"{len(pts)} points (kernel density, bandwidth {d.bandwidth:.3f})"
        if isinstance(d, PointCloud)
        else f"mixture of {int(d.weights.numel())} Gaussians, {len(pts)} samples shown"
    )
    fig = figures.scatter_panel({name: pts}, title=f"{name}: {what}", bounds=d.bounds())
    st.plotly_chart(fig, theme=None, key="preview_chart")
    st.download_button(
        "CSV of these points",
        functools.partial(export.table_csv, {"x": pts[:, 0].tolist(), "y": pts[:, 1].tolist()}),
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
    st.caption(
        f"At most {T.MAX_CONCURRENT_JOBS} trainings run on this server at once; later ones wait in line. "
        "A training stops when you close this tab."
    )
    if st.button("train", key="train_go", disabled=busy, type="primary"):
        dens = sources.user_densities()[name]
        job = Job(name, int(steps), bool(with_proj))
        st.session_state["job"] = job
        T.start_job(job, T.training_points(dens), sde_name, int(width))
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
    T.touch(job)  # this session is still here
    if job.done:
        if job.error:
            st.error(state.plain(f"training failed: {job.error}"))
        elif job.result is not None and job.name in sources.user_densities():
            sources.user_models()[job.name] = job.result
            st.session_state["job"] = None
            st.rerun(scope="app")
        return
    if job.queued:
        st.info(f"{job.phase} (the page stays usable meanwhile)", icon=":material/schedule:")
    else:
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
