"""The maths: Theorems 1 and 2 and the predict-project step, each beside a small live view; a diagnostic."""

from __future__ import annotations

from dataclasses import dataclass, replace

import cache
import numpy as np
import sources
import state
import streamlit as st
import widgets as W

from geoflow import figures
from geoflow.densities import GaussianMixture
from geoflow.overlays import arrow_segments, plot_bounds
from geoflow.run import RunSpec, ScoreSource, Trajectory, generator

PAGE = "maths"

LIVE_N = 600


@dataclass(frozen=True)
class Settings:
    run: RunSpec
    t: float
    beta_max: float
    t_end: float
    sigma_max: float


def controls() -> Settings:
    sb = st.sidebar
    sb.header("Live views")
    dens = sources.density_choices()
    density = sb.selectbox("density", dens, key=state.url_state(PAGE, "density", "asymmetric", dens))
    t = sb.slider("time t", 0.0, 1.0, step=0.01, key=state.url_state(PAGE, "t", 0.3, lo=0.0, hi=1.0))
    sb.header("Diagnostic: is x_T close to N(0, I)?")
    beta_max = sb.slider(
        "VP beta_max", 0.5, 20.0, step=0.5, key=state.url_state(PAGE, "beta_max", 10.0, lo=0.5, hi=20.0)
    )
    t_end = sb.slider(
        "VP end time T", 0.1, 1.0, step=0.05, key=state.url_state(PAGE, "T", 1.0, lo=0.1, hi=1.0)
    )
    sigma_max = sb.slider(
        "VE sigma_max", 1.0, 50.0, step=1.0, key=state.url_state(PAGE, "sigma_max", 10.0, lo=1.0, hi=50.0)
    )
    run = RunSpec(data=density, steps=40, n=LIVE_N, seed=0)
    return Settings(run, float(t), float(beta_max), float(t_end), float(sigma_max))


def data_moments(density_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the data: exact for mixtures, from 20000 samples otherwise."""
    d = sources.resolve_density(density_name)
    if isinstance(d, GaussianMixture):
        w, m, c = d.weights.numpy(), d.means.numpy(), d.covs.numpy()
        mu = w @ m
        second = np.einsum("k,kij->ij", w, c + np.einsum("ki,kj->kij", m, m))
        return mu, second - np.outer(mu, mu)
    x = d.sample(20_000, generator(0, 50)).numpy().astype(np.float64)
    return x.mean(0), np.cov(x, rowvar=False)


def prior_diagnostic(s: Settings) -> list[dict]:
    """KL and Bures-W2 of the Gaussian with x_T's exact mean and covariance to the prior.

    ``x_T = alpha(T) x_0 + sigma(T) z`` has mean ``alpha mu`` and covariance ``alpha^2 C + sigma^2 I``
    (method.md section 1); the Gaussian with these moments against N(0, prior_std^2 I) measures the
    mismatch the sampler starts with (a mixture's own KL is larger or equal in its mean/covariance part).
    """
    from geoflow import gaussian
    from geoflow.sde import VESDE, VPSDE

    mu, cov = data_moments(s.run.data)
    rows = []
    for name, sde in (
        (f"VP beta_max={s.beta_max:g}, T={s.t_end:g}", VPSDE(beta_max=s.beta_max, T=s.t_end)),
        (f"VE sigma_max={s.sigma_max:g}", VESDE(sigma_max=s.sigma_max)),
    ):
        a, sig = float(sde.alpha(sde.T)), float(sde.sigma(sde.T))
        m_T, c_T = a * mu, a * a * cov + sig * sig * np.eye(2)
        p2 = sde.prior_std() ** 2 * np.eye(2)
        kl = gaussian.gaussian_kl(m_T, c_T, np.zeros(2), p2)
        w2 = gaussian.bures_w2(m_T, c_T, np.zeros(2), p2)
        rows.append(
            {"SDE": name, "alpha(T)": a, "KL(x_T || prior)": kl, "W2(x_T, prior)": w2, "ok": kl < 0.01}
        )
    return rows


def render(s: Settings) -> None:
    st.markdown(
        "geoflow follows Ghimire et al. (2023), *Geometry of Score Based Generative Models*: "
        "noising and generation "
        "are Wasserstein gradient flows. Notation of method.md: VP SDE with the paper's beta."
    )
    got = W.prepare(s.run)
    if got is None:
        return
    src, density, traj = got
    bounds = plot_bounds(density, src.sde)
    colors = figures.position_colors(traj.data)
    theorem1(s, src, traj, colors, bounds)
    theorem2(s, src, traj, bounds)
    predict_project(s, src, density, bounds)
    diagnostic(s)


def theorem1(
    s: Settings, src: ScoreSource, traj: Trajectory, colors: list[str], bounds: tuple[float, float]
) -> None:
    st.header("Theorem 1: noising is the gradient flow of KL(mu || pi)")
    c1, c2 = st.columns([1, 1])
    with c1:
        st.latex(r"dx = -\beta(t)\,x\,dt + \sqrt{2\beta(t)}\,dW")
        st.latex(
            r"\partial_t \mu_t = \nabla\cdot\Big(\mu_t\,\beta(t)\,\nabla \log "
            r"\frac{\mu_t}{\pi}\Big),\quad \pi = N(0, I)"
        )
        st.latex(
            r"v_t(x) = -\beta(t)\big(\nabla\log\mu_t(x) + x\big) = -\nabla_{W} \,\mathrm{KL}(\mu_t\,\|\,\pi)"
        )
        st.markdown(
            "The free energy KL(mu_t || pi) falls along the forward flow; the arrows are the velocity v_t."
        )
        fe = _free_energy_curve(s.run.data, sources.density_key(s.run.data))
        if fe is not None:
            fig = figures.line_chart(
                fe[0],
                {"KL(mu_t || pi), exact": fe[1]},
                title="free energy along the flow",
                xaxis="t",
                yaxis="nats",
                markers=False,
            )
            fig.add_vline(x=s.t, line_dash="dot")
            st.plotly_chart(fig, theme=None, key="fe_t1")
    with c2:
        k = int(np.abs(traj.times[: traj.n_forward] - s.t).argmin())
        from geoflow import wgf

        t = float(max(traj.times[k], src.sde.t_min))
        vf = wgf.velocity_field(src.score_fn, src.sde, t, bounds, 15, "forward")
        base = np.stack([vf.X.ravel(), vf.Y.ravel()], 1)
        v = np.stack([vf.U.ravel(), vf.V.ravel()], 1)
        v = v / max(float(np.linalg.norm(v, axis=1).max()), 1e-9) * (bounds[1] - bounds[0]) / 16
        fig = figures.scatter_panel(
            {"particles": traj.paths[k]},
            title=f"forward particles at t = {traj.times[k]:.2f}",
            bounds=bounds,
            colors=colors,
        )
        arr = arrow_segments(base, v)
        fig.add_scatter(
            x=arr[:, 0], y=arr[:, 1], mode="lines", name="v_t", line={"color": "rgba(200,40,40,0.7)"}
        )
        st.plotly_chart(fig, theme=None, key="t1_view")


@st.cache_data(max_entries=16, show_spinner=False)
def _free_energy_curve(density_name: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    from geoflow import wgf
    from geoflow.sde import make_sde

    d = sources.resolve_density(density_name)
    if not isinstance(d, GaussianMixture):
        return None
    t = np.linspace(0.0, 1.0, 26)
    return t, np.asarray(wgf.free_energy_exact(d, t, make_sde("vp")))


def theorem2(s: Settings, src: ScoreSource, traj: Trajectory, bounds: tuple[float, float]) -> None:
    st.header("Theorem 2: generation is the gradient flow of -KL, split in two steps")
    c1, c2 = st.columns([1, 1])
    with c1:
        st.latex(r"F = G + H,\qquad H(\mu) = \int \log\mu\,d\mu")
        st.latex(r"G(\mu) = \int(-2\log\mu + \log\pi)\,d\mu")
        st.latex(r"y = x - \beta\,\nabla\frac{\delta G}{\delta\mu}\,d\tau")
        st.latex(r"\phantom{y} = x + \beta\,\big(2\nabla\log\mu_\tau(x) + x\big)\,d\tau")
        st.latex(r"x' = y + \sqrt{2\beta\,d\tau}\,z")
        st.caption(
            "explicit Wasserstein step on G, then the JKO step on H (its exact solution: the heat flow)"
        )
        st.markdown(
            "With grad log pi(x) = -x, the first variation of G has gradient -2 grad log mu - x, hence the "
            "explicit step above (the reverse SDE's drift). Dropping the split gives the "
            "probability-flow ODE dx/dtau = beta (grad log mu_tau + x). "
            "Forward and reverse trace the same curve of measures in opposite directions: the right panel "
            "compares the generated particles with the noising particles at the same t."
        )
    with c2:
        rev_t = traj.times[traj.n_forward :]
        k = int(np.abs(rev_t - s.t).argmin())
        kf = int(np.abs(traj.times[: traj.n_forward] - rev_t[k]).argmin())
        fig = figures.scatter_panel(
            {"generation (Euler-Maruyama)": traj.paths[traj.n_forward + k], "noising": traj.paths[kf]},
            title=f"same t = {rev_t[k]:.2f}: generation vs noising",
            bounds=bounds,
        )
        st.plotly_chart(fig, theme=None, key="t2_view")


def predict_project(s: Settings, src: ScoreSource, density, bounds: tuple[float, float]) -> None:
    st.header("The predict-project step (method.md section 3)")
    c1, c2 = st.columns([1, 1])
    with c1:
        st.latex(r"x_{\rm pred} = x + b\,(2 s_\theta(x, t) + x)\,dt")
        st.latex(r"x_{\rm proj} = x_{\rm pred} + \sqrt{b}\;\delta\mu\;dt\;T_\theta(x_{\rm pred}, t - dt)")
        st.latex(r"x \leftarrow x_{\rm proj} + \sqrt{2 b\,dt}\,z")
        st.latex(r"T^*(x) \approx \frac{2}{2 + \sqrt{b}}\, s(t-dt)^2\, s_\theta(x, t - dt)")
        st.caption("the training-free (Tweedie) projection")
        st.markdown(
            "Each move of one step is drawn at the right: predict (blue), project (orange), diffuse (grey), "
            "for 40 particles at N = 10."
        )
    with c2:
        spec = replace(s.run, sampler="predict_project", steps=10, projection="tweedie")
        try:
            traj = cache.trajectory(spec, sources.density_key(spec.data), src.key, density, src)
        except W.APP_ERRORS as e:
            W.show_error(e)
            return
        step = min(max(int(round((1 - s.t) * 10)), 0), 9)
        if "x_pred" not in traj.moves or step >= traj.moves["x_pred"].shape[0]:
            st.info("no predict / project moves reported for this step")
            return
        x = traj.paths[traj.n_forward + step][:40]
        pred, proj = traj.moves["x_pred"][step][:40], traj.moves["x_proj"][step][:40]
        nxt = traj.paths[traj.n_forward + step + 1][:40]
        fig = figures.scatter_panel({"x": x, "x_next": nxt}, title=f"step {step + 1} of 10", bounds=bounds)
        for a, b, name, color in (
            (x, pred, "predict", "royalblue"),
            (pred, proj, "project", "darkorange"),
            (proj, nxt, "diffuse", "grey"),
        ):
            seg = arrow_segments(a, b - a, head=0.2)
            fig.add_scatter(x=seg[:, 0], y=seg[:, 1], mode="lines", name=name, line={"color": color})
        st.plotly_chart(fig, theme=None, key="pp_view")
        rms = [
            float(np.sqrt(((b - a) ** 2).sum(1).mean())) for a, b in ((x, pred), (pred, proj), (proj, nxt))
        ]
        st.caption(
            f"RMS move sizes: predict {rms[0]:.3f}, project {rms[1]:.3f}, diffuse {rms[2]:.3f} "
            f"(projection strength {spec.effective_strength():g}): at this strength the projection barely "
            "moves the sample."
        )


def diagnostic(s: Settings) -> None:
    st.header("Why is my sample bad? A measured check")
    rows = prior_diagnostic(s)
    st.dataframe(rows, hide_index=True)
    for r in rows:
        if not r["ok"]:
            st.warning(
                f"{r['SDE']}: x_T is measurably far from the prior (KL {r['KL(x_T || prior)']:.3g} nats, W2 "
                f"{r['W2(x_T, prior)']:.3g}). The sampler starts from N(0, I) but the model was "
                "trained on this "
                "x_T: raise beta_max / T (VP) or sigma_max (VE)."
            )
        else:
            st.success(f"{r['SDE']}: x_T matches the prior (KL {r['KL(x_T || prior)']:.2g} nats).")
    st.markdown(
        "Other causes, each measurable on the Flows and Projection pages: too few steps (W2 to "
        "data above its floor; "
        "try DPM-Solver++ or Heun at the same NFE), no final denoising step (the last step's noise "
        "stays in the "
        "sample), and the step spacing at low N (log-SNR spacing for DDIM / DPM-Solver)."
    )


settings = controls()
state.sync_url()
st.title("The maths, next to the picture")
state.show_notices()
render(settings)
