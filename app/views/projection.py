"""Projection: the paper's predict-project step against Euler-Maruyama on the same initial noise."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import common as C
import numpy as np
import streamlit as st

from geoflow import figures
from geoflow.densities import GaussianMixture
from geoflow.samplers import SAMPLERS

VARIANTS = tuple(n for n in C.sampler_options() if n.startswith(C.PROJECTED_PREFIX))
SWEEP_STEPS = (5, 10, 20, 40)
SWEEP_SAMPLERS = ("euler_maruyama", "predict_project", "ddim", "dpm_solver_pp_2m", "ode_heun")
SINGLE_STEP_MAX = 60  # steps shown move by move (3 frames per step)


@dataclass(frozen=True)
class Settings:
    base: C.RunSpec  # Euler-Maruyama
    proj: C.RunSpec  # the projection variant, same noise
    view_step: int


def controls() -> Settings:
    st.sidebar.header("Projection settings")
    run = C.run_controls(projection_toggle=False)
    variants = [v for v in VARIANTS if v in SAMPLERS]
    variant = st.sidebar.selectbox(
        "projection sampler",
        variants,
        key=C.url_state("variant", variants[0], variants),
        format_func=lambda n: SAMPLERS[n].label,
    )
    kinds = ("tweedie", "learned", "exact")
    kind = st.sidebar.selectbox("projection T", kinds, key=C.url_state("pkind", "tweedie", kinds))
    strength = st.sidebar.number_input(
        "projection strength dmu",
        0.0,
        1000.0,
        step=0.5,
        key=C.url_state("pstrength", C.default_strength(), lo=0.0),
    )
    base = replace(run, sampler="euler_maruyama", projection=False)
    proj = replace(run, sampler=variant, projection=True, proj_kind=kind, strength=float(strength))
    return Settings(base, proj, int(st.session_state.get("view_step", 0)))


def quality(spec: C.RunSpec, traj: C.Trajectory) -> dict:
    """KL (k-NN, mixtures) and exact W2 to data of the final samples, with their floors."""
    return _quality(spec, traj.paths[-1], bool(traj.error))


@st.cache_data(max_entries=64, show_spinner=False)
def _quality(spec: C.RunSpec, final: np.ndarray, diverged: bool) -> dict:
    from geoflow.metrics import exact_w2, kl_knn

    density = C.resolve_density(spec.density)
    m = final.shape[0]
    data_a = density.sample(m, C.generator(spec.seed, 31)).numpy()
    data_b = density.sample(m, C.generator(spec.seed, 32)).numpy()
    out = {
        "w2": float("nan"),
        "w2_floor": exact_w2(data_a, data_b),
        "kl": float("nan"),
        "kl_floor": float("nan"),
    }
    if diverged or not np.all(np.isfinite(final)):
        return out
    out["w2"] = exact_w2(final.astype(np.float64), data_a)
    if isinstance(density, GaussianMixture):
        try:
            out["kl"] = kl_knn(final, density.log_prob)
            out["kl_floor"] = kl_knn(data_a, density.log_prob)
        except ValueError:
            pass
    return out


def compute(s: Settings) -> dict | None:
    got_a = C.prepare(s.base)
    if got_a is None:
        return None
    src, ta = got_a
    try:
        tb = C.trajectory(s.proj, src.key, src)
        # the NFE-matched baseline the paper omits: Euler-Maruyama with twice the steps
        em2 = replace(s.base, steps=min(2 * s.base.steps, C.MAX_STEPS))
        tc = C.trajectory(em2, src.key, src)
    except (ValueError, RuntimeError) as e:
        C.show_error(e, "projection run")
        return None
    return {
        "src": src,
        "base": ta,
        "proj": tb,
        "qa": quality(s.base, ta),
        "qb": quality(s.proj, tb),
        "em2": (em2, tc, quality(em2, tc)),
    }


def _generation(traj: C.Trajectory) -> tuple[np.ndarray, list[str]]:
    k = traj.n_forward
    return traj.paths[k:], traj.labels[k:]


def render(s: Settings, r: dict | None) -> None:
    if r is None:
        return
    src, ta, tb = r["src"], r["base"], r["proj"]
    bounds = C.plot_bounds(C.resolve_density(s.base.density), src.sde)
    colors = figures.position_colors(ta.noise)
    cols = st.columns(2)
    for col, spec, traj, q, key in ((cols[0], s.base, ta, r["qa"], "a"), (cols[1], s.proj, tb, r["qb"], "b")):
        with col:
            if traj.error:
                st.error(f"diverged: {traj.error}")
            paths, labels = _generation(traj)
            fig = figures.particle_animation(
                paths,
                labels,
                colors=colors,
                bounds=bounds,
                start_frame=len(labels) - 1,
                title=f"{traj.sampler_label}<br>N={spec.steps}, NFE={traj.nfe}",
                uirevision=f"proj-{key}",
                compact=True,
            )
            st.plotly_chart(fig, theme=None, key=f"proj_chart_{key}")
            m = st.columns(3)
            m[0].metric("NFE", traj.nfe)
            m[1].metric(
                "W2 to data", f"{q['w2']:.3f}", help=f"floor {q['w2_floor']:.3f} (data vs data, same n)"
            )
            if np.isfinite(q["kl"]):
                m[2].metric("KL (k-NN)", f"{q['kl']:.3f}", help=f"floor {q['kl_floor']:.3f} (true samples)")
    em2, tc, qc = r["em2"]
    m = st.columns(4)
    m[0].markdown(f"**Euler-Maruyama at N = {em2.steps}** (same NFE budget)")
    m[1].metric("NFE", tc.nfe)
    m[2].metric("W2 to data", f"{qc['w2']:.3f}")
    if np.isfinite(qc["kl"]):
        m[3].metric("KL (k-NN)", f"{qc['kl']:.3f}")
    st.caption(
        f"All runs start from the same x_T (seed {s.base.seed}) and use the same Brownian path. Floors: W2 "
        f"{r['qa']['w2_floor']:.3f}, KL {r['qa']['kl_floor']:.3f} (NaN: no exact density). "
        "Predict-project costs 2 NFE "
        "per step, hence the Euler-Maruyama run at twice the steps. Quality numbers use the shown particles: "
        "at small n they cannot separate close samplers (see the floors)."
    )
    single_step(s, tb, colors, bounds)
    curves(s, src)


def single_step(s: Settings, traj: C.Trajectory, colors: list[str], bounds: tuple[float, float]) -> None:
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
def live_sweep(spec: C.RunSpec, src_key: str, _src: C.ScoreSource, n: int = 1000) -> dict:
    """Quality against steps and NFE for several samplers on the same noise (this density, this score)."""
    rows: dict[str, list] = {"sampler": [], "steps": [], "nfe": [], "w2": [], "kl": []}
    for name in SWEEP_SAMPLERS:
        for steps in SWEEP_STEPS:
            sp = replace(
                spec, sampler=name, steps=steps, projection=name == "predict_project", n=n, spacing="default"
            )
            traj = C.trajectory(sp, src_key, _src)
            q = _quality(sp, traj.paths[-1], bool(traj.error))
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
    path = C.ROOT / "benchmarks" / "RESULTS.md"
    if not path.exists():
        return None
    m = re.search(rf"<!-- BEGIN {name} -->(.*?)<!-- END {name} -->", path.read_text(), re.S)
    return m.group(1).strip() if m else None


def curves(s: Settings, src: C.ScoreSource) -> None:
    st.subheader("Quality against steps and against NFE")
    plot = C.ROOT / "benchmarks" / "projection_quality_vs_nfe.png"
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
        rows = live_sweep(replace(s.base, n=1000), src.key, src)
    except (ValueError, RuntimeError) as e:
        C.show_error(e, "live sweep")
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
                    {SAMPLERS[name].label: y},
                    title=f"{metric.upper()} vs {xkey}",
                    xaxis=xkey,
                    yaxis=metric.upper(),
                    floor=floor,
                    log_x=True,
                    log_y=True,
                )
            else:
                fig.add_scatter(x=x, y=y, name=SAMPLERS[name].label, mode="lines+markers")
        col.plotly_chart(fig, theme=None, key=f"sweep_{xkey}")
    st.download_button(
        "CSV of the sweep",
        figures.table_csv({k: rows[k] for k in ("sampler", "steps", "nfe", "w2", "kl")}),
        file_name="geoflow_sweep.csv",
        key="sweep_csv",
    )


settings = controls()
C.sync_url()
st.title("Projection: predict-project against Euler-Maruyama")
render(settings, compute(settings))
