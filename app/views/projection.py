"""Projection: the paper's predict-project step against Euler-Maruyama on the same initial noise.

A preset of the Flows page's A/B comparison (:mod:`comparison`): A is Euler-Maruyama, B one
predict-project variant, same data, x_T and Brownian path, one figure with one slider. Below it:
Euler-Maruyama at 2N (the NFE-matched baseline), the single-step predict / project / diffuse view,
the shipped benchmark results and a live sweep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import cache
import comparison
import numpy as np
import presentation
import sources
import state
import streamlit as st
import widgets as W
import zoom

from geoflow import export, figures
from geoflow.overlays import plot_bounds
from geoflow.run import RunSpec, ScoreSource, Trajectory

PAGE = "projection"
SWEEP_STEPS = (5, 10, 20, 40)
SWEEP_SAMPLERS = ("euler_maruyama", "predict_project", "ddim", "dpm_solver_pp_2m", "ode_heun")
SINGLE_STEP_MAX = 60  # steps shown move by move (3 frames per step)


@dataclass(frozen=True)
class Settings:
    base: RunSpec  # Euler-Maruyama
    proj: RunSpec  # the projection variant, same noise
    view_step: int


def controls() -> Settings:
    st.sidebar.header("Projection settings")
    proj = W.projection_controls(PAGE)
    base = replace(proj, sampler="euler_maruyama", strength=None)
    return Settings(base, proj, int(st.session_state.get("view_step", 0)))


def quality(spec: RunSpec, src: ScoreSource, density, traj: Trajectory) -> dict:
    """KL (k-NN, mixtures) and exact W2 to data of the final samples, with their floors."""
    dk = sources.density_key(spec.data)
    return cache.final_quality(spec, dk, src.key, density, traj.final, bool(traj.error))


def compute(s: Settings) -> dict | None:
    got = comparison.compute([("A", s.base), ("B", s.proj)])
    if got is None:
        return None
    density, sides = got
    src = sides[0].src
    dk = sources.density_key(s.base.data)
    try:
        # the NFE-matched baseline the paper omits: Euler-Maruyama with twice the steps
        em2 = replace(s.base, steps=min(2 * s.base.steps, W.MAX_STEPS))
        tc = cache.trajectory(em2, dk, src.key, density, src)
    except W.APP_ERRORS as e:
        W.show_error(e, "projection run")
        return None
    return {"src": src, "density": density, "sides": sides, "em2": (em2, tc, quality(em2, src, density, tc))}


def render(s: Settings, r: dict | None) -> None:
    if r is None:
        return
    src, sides = r["src"], r["sides"]
    bounds = plot_bounds(r["density"], src.sde)
    colors = figures.position_colors(sides[0].traj.noise)
    fig = comparison.figure(
        r["density"],
        sides,
        color_by_noise=True,
        generation_only=True,
        start_frame=10**9,  # the final samples first
        title=f"{sides[0].traj.sampler_label} vs {sides[1].traj.sampler_label}",
        uirevision="proj-ab",
        **presentation.figure_style(),
    )
    st.plotly_chart(fig, theme=None, key="proj_chart", config={"displaylogo": False})
    if presentation.presenting():
        st.caption("A: Euler-Maruyama, B: the projection variant, on the same x_T and Brownian path.")
        return
    comparison.quality_columns(sides)
    if st.button(
        "open this comparison on the Flows page (A/B with any other setting, noising frames, overlays)",
        key="to_flows",
        icon=":material/compare:",
    ):
        comparison.open_on_flows(s.base, s.proj)
        st.switch_page("views/flows.py")
    em2, tc, qc = r["em2"]
    m = st.columns(4)
    m[0].markdown(f"**Euler-Maruyama at N = {em2.steps}** (same NFE budget)")
    m[1].metric("NFE", tc.nfe)
    m[2].metric("W2 to data", f"{qc['w2']:.3f}")
    if np.isfinite(qc["kl"]):
        m[3].metric("KL (k-NN)", f"{qc['kl']:.3f}")
    qa = sides[0].quality
    st.caption(
        f"All runs start from the same x_T (seed {s.base.seed}) and use the same Brownian path. Floors: W2 "
        f"{qa['w2_floor']:.3f}, KL {qa['kl_floor']:.3f} (NaN: no exact density). "
        "Predict-project costs 2 NFE "
        "per step, hence the Euler-Maruyama run at twice the steps. Quality numbers use the shown particles: "
        "at small n they cannot separate close samplers (see the floors). The same comparison, with any "
        "other setting for A and B, is on the Flows page (A/B comparison)."
    )
    single_step(s, sides[1].traj, colors, bounds)
    curves(s, src, r["density"])


def single_step(s: Settings, traj: Trajectory, colors: list[str], bounds: tuple[float, float]) -> None:
    """Predict, project and diffuse as separate moves: three frames per sampler step."""
    st.subheader("Single-step mode: predict → project → diffuse")
    if "x_pred" not in traj.moves:
        st.info("This sampler reports no separate predict / project moves.")
        return
    xs = traj.paths[traj.n_forward :]
    pred, proj = traj.moves["x_pred"], traj.moves["x_proj"]
    n_moves = min(pred.shape[0], SINGLE_STEP_MAX)
    if pred.shape[0] > SINGLE_STEP_MAX:
        st.caption(f"showing the first {SINGLE_STEP_MAX} steps of {pred.shape[0]} (cap)")
    frames, labels = [xs[0]], [f"x at t={traj.times[traj.n_forward]:.3f}"]
    for k in range(n_moves):
        t_next = traj.times[traj.n_forward + k + 1]
        frames += [pred[k], proj[k], xs[k + 1]]
        labels += [
            f"step {k + 1}: predict",
            f"step {k + 1}: project",
            f"step {k + 1}: diffuse → t={t_next:.3f}",
        ]
    paths = np.stack(frames)
    fig = figures.particle_animation(
        paths,
        labels,
        colors=colors,
        bounds=bounds,
        title="one move per frame",
        uirevision="proj-single",
        frame_ms=300,
    )
    st.plotly_chart(fig, theme=None, key="single_step_chart")
    move_p = np.sqrt(((proj[:n_moves] - pred[:n_moves]) ** 2).sum(-1).mean(-1))
    move_d = np.sqrt(((xs[1 : n_moves + 1] - proj[:n_moves]) ** 2).sum(-1).mean(-1))
    move_e = np.sqrt(((pred[:n_moves] - xs[:n_moves]) ** 2).sum(-1).mean(-1))
    t = traj.times[traj.n_forward + 1 : traj.n_forward + 1 + n_moves]
    st.plotly_chart(
        figures.line_chart(
            t,
            {"predict": move_e, "project": move_p, "diffuse": move_d},
            title="RMS size of each move",
            xaxis="t reached",
            yaxis="RMS displacement",
        ),
        theme=None,
        key="moves_chart",
    )


@st.cache_data(max_entries=16, show_spinner="live sweep over steps and samplers ...")
def live_sweep(
    spec: RunSpec, density_key: str, source_key: str, _density, _src: ScoreSource, n: int = 1000
) -> dict:
    """Quality against steps and NFE for several samplers on the same noise (this density, this score)."""
    rows: dict[str, list] = {"sampler": [], "steps": [], "nfe": [], "w2": [], "kl": []}
    for name in SWEEP_SAMPLERS:
        for steps in SWEEP_STEPS:
            sp = replace(
                spec, sampler=name, steps=steps, n=n, spacing="default", strength=None, projection="tweedie"
            )
            traj = cache.trajectory(sp, density_key, source_key, _density, _src)
            q = cache.final_quality(sp, density_key, source_key, _density, traj.final, bool(traj.error))
            rows["sampler"].append(name)
            rows["steps"].append(steps)
            rows["nfe"].append(traj.nfe)
            rows["w2"].append(q["w2"])
            rows["kl"].append(q["kl"])
    rows["w2_floor"] = q["w2_floor"]
    rows["kl_floor"] = q["kl_floor"]
    return rows


def shipped_section(name: str) -> str | None:
    """One benchmark's section of benchmarks/RESULTS.md (the shipped, measured tables), if present."""
    path = state.ROOT / "benchmarks" / "RESULTS.md"
    if not path.exists():
        return None
    m = re.search(rf"<!-- BEGIN {name} -->(.*?)<!-- END {name} -->", path.read_text(), re.S)
    return m.group(1).strip() if m else None


def curves(s: Settings, src: ScoreSource, density) -> None:
    st.subheader("Quality against steps and against NFE")
    plot = state.ROOT / "benchmarks" / "projection_quality_vs_nfe.png"
    section = shipped_section("projection")
    if plot.exists() or section:
        with st.expander("shipped benchmark results (benchmarks/RESULTS.md, projection section)"):
            if plot.exists():
                st.image(str(plot), caption="quality against NFE for every sampler (shipped benchmark)")
            if section:
                st.markdown(section)
    else:
        st.info("No shipped projection benchmark results in this build (benchmarks/RESULTS.md).")
    if not st.toggle(
        "live sweep on this density (N = 5, 10, 20, 40; 1000 particles; 10-60 s once, then cached)",
        key="sweep",
    ):
        return
    try:
        rows = live_sweep(replace(s.base, n=1000), sources.density_key(s.base.data), src.key, density, src)
    except W.APP_ERRORS as e:
        W.show_error(e, "live sweep")
        return
    use_kl = np.isfinite(rows["kl"]).any()
    metric, floor = ("kl", rows["kl_floor"]) if use_kl else ("w2", rows["w2_floor"])
    names = list(dict.fromkeys(rows["sampler"]))
    sampler = np.asarray(rows["sampler"])
    cols = st.columns(2)
    for col, xkey in zip(cols, ("steps", "nfe"), strict=True):
        fig = None
        for name in names:
            k = sampler == name
            x = np.asarray(rows[xkey])[k]
            y = np.asarray(rows[metric], dtype=float)[k]
            if fig is None:
                fig = figures.line_chart(
                    x,
                    {W.label(name): y},
                    title=f"{metric.upper()} vs {xkey}",
                    xaxis=xkey,
                    yaxis=metric.upper(),
                    floor=floor,
                    log_x=True,
                    log_y=True,
                )
            else:
                fig.add_scatter(x=x, y=y, name=W.label(name), mode="lines+markers")
        col.plotly_chart(fig, theme=None, key=f"sweep_{xkey}")
    st.download_button(
        "CSV of the sweep",
        export.table_csv({k: rows[k] for k in ("sampler", "steps", "nfe", "w2", "kl")}),
        file_name="geoflow_sweep.csv",
        key="sweep_csv",
    )


settings = controls()
state.sync_url()
if presentation.presenting():
    presentation.apply()
else:
    st.title("Projection: predict-project against Euler-Maruyama")
state.show_notices()
render(settings, compute(settings))
zoom.keep_zoom()
