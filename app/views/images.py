"""Images: sample grids, the x_t / x0_hat strip, a PCA path of x_t, classifier-feature quality."""

from __future__ import annotations

from dataclasses import dataclass

import common as C
import numpy as np
import streamlit as st
import torch

from geoflow import figures
from geoflow.samplers import SAMPLERS, SamplerDiverged, get_sampler

MAX_GRID = 64
QUALITY_N = 1000
STRIP_SAMPLES = 6
STRIP_COLUMNS = 10


@dataclass(frozen=True)
class Settings:
    data: str
    sampler: str
    steps: int
    projection: bool
    proj_kind: str
    strength: float
    final_denoise: bool
    seed: int
    n: int

    @property
    def sampler_name(self) -> str:
        return "predict_project" if self.projection and self.sampler == "euler_maruyama" else self.sampler


def controls() -> Settings:
    from geoflow.images import IMAGE_SETS

    sb = st.sidebar
    sb.header("Image settings")
    data = sb.selectbox("image set", IMAGE_SETS, key=C.url_state("img_data", IMAGE_SETS[0], IMAGE_SETS))
    names = [n for n in C.sampler_options() if n != "annealed_langevin"]
    sampler = sb.selectbox(
        "sampler",
        names,
        key=C.url_state("img_sampler", "euler_maruyama", names),
        format_func=lambda n: SAMPLERS[n].label,
    )
    steps = sb.slider("steps N", 1, C.MAX_STEPS, key=C.url_state("img_steps", 20, lo=1, hi=C.MAX_STEPS))
    proj = sb.toggle("projection step (with Euler-Maruyama)", key=C.url_state("img_projection", False))
    kinds = ("tweedie", "learned")
    kind = sb.selectbox("projection T", kinds, key=C.url_state("img_pkind", "tweedie", kinds))
    strength = sb.number_input(
        "projection strength dmu",
        0.0,
        1000.0,
        step=0.5,
        key=C.url_state("img_strength", C.default_strength(), lo=0.0),
    )
    fd = sb.toggle("final denoising step", key=C.url_state("img_final", True))
    seed = sb.number_input("seed", 0, 10_000, key=C.url_state("img_seed", 0, lo=0, hi=10_000))
    n = sb.select_slider(
        "samples in the grid",
        [16, 36, 64],
        key=C.url_state("img_n", 36, [16, 36, 64]),
        help=f"at most {MAX_GRID}; the quality number uses {QUALITY_N}",
    )
    return Settings(data, sampler, int(steps), bool(proj), kind, float(strength), bool(fd), int(seed), int(n))


@st.cache_resource(show_spinner="loading image models ...")
def image_models(data: str) -> tuple[torch.nn.Module, torch.nn.Module | None, torch.nn.Module | None]:
    """The shipped score network, projection network (if any) and classifier of an image set."""
    score, proj = C.pretrained_pair(f"{data}-vp")
    clf = C.pretrained_model(f"{data}-classifier") if C.pretrained_available(f"{data}-classifier") else None
    return score, proj, clf


def _run(s: Settings, n: int, keep: int) -> dict:
    from geoflow.images import image_shape
    from geoflow.projection import make_projection

    score, proj_model, _ = image_models(s.data)
    sde = score.sde
    info = get_sampler(s.sampler_name)
    ts = sde.time_grid(s.steps, info.spacing)  # type: ignore[arg-type]
    x_T = sde.prior_sample((n, *image_shape(s.data)), C.generator(s.seed, 40))
    states, x0s, times = [x_T[:keep].clone()], [], [float(ts[0])]
    nfe = [0]

    def cb(d: dict) -> None:
        states.append(d["x"][:keep].clone())
        x0s.append(d["x0_hat"][:keep].clone())
        times.append(d["t"])
        nfe[0] = d["nfe"]

    kw: dict = dict(info.kwargs)
    kw.update(final_denoise=s.final_denoise, callback=cb, generator=C.generator(s.seed, 41))
    if s.sampler_name.startswith(C.PROJECTED_PREFIX):
        if s.proj_kind == "learned" and proj_model is None:
            raise ValueError(f"no learned projection network is shipped for {s.data}; use tweedie")
        kw["project"] = make_projection(s.proj_kind, score_fn=score.score_fn(), sde=sde, model=proj_model)
        kw["strength"] = s.strength
    with torch.no_grad():
        x = info.fn(score.score_fn(), sde, x_T, ts, **kw)
    x0s.append(states[-1])
    return {
        "x": x,
        "states": torch.stack(states),
        "x0": torch.stack(x0s),
        "t": np.asarray(times),
        "nfe": nfe[0],
    }


@st.cache_data(max_entries=16, show_spinner="sampling images ...")
def compute(s: Settings) -> dict:
    r = _run(s, s.n, min(s.n, STRIP_SAMPLES * 4))
    states = r["states"].flatten(2).numpy()  # (F, k, D)
    flat = states.reshape(-1, states.shape[-1])
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    pca = ((states - mean) @ vt[:2].T).astype(np.float32)  # (F, k, 2)
    return {
        "grid": r["x"].numpy(),
        "states": r["states"].numpy(),
        "x0": r["x0"].numpy(),
        "t": r["t"],
        "nfe": r["nfe"],
        "pca": pca,
    }


@st.cache_data(max_entries=16, show_spinner=f"sampling {QUALITY_N} images for the quality number ...")
def measure(s: Settings) -> dict:
    from geoflow.images import image_quality

    _, _, clf = image_models(s.data)
    if clf is None:
        raise ValueError(
            f"no classifier is shipped for {s.data}: the quality number needs {s.data}-classifier"
        )
    x = _run(s, QUALITY_N, 1)["x"]
    return image_quality(x, s.data, clf)


def strip(states: np.ndarray, t: np.ndarray, row: int) -> np.ndarray:
    from geoflow.images import image_grid

    pick = np.unique(np.linspace(0, states.shape[0] - 1, STRIP_COLUMNS).round().astype(int))
    return image_grid(torch.as_tensor(states[pick, row]), nrow=len(pick), scale=6), t[pick]


def render(s: Settings, r: dict) -> None:
    from geoflow.images import image_grid

    st.caption(f"{SAMPLERS[s.sampler_name].label}, N = {s.steps}, NFE = {r['nfe']} (seed {s.seed})")
    c1, c2 = st.columns([1, 1])
    with c1:
        st.subheader("samples")
        grid = image_grid(torch.as_tensor(r["grid"]), nrow=int(np.sqrt(s.n)), scale=6)
        st.image(grid, clamp=True, width="stretch")
    with c2:
        st.subheader("PCA path of x_t")
        fig = figures.line_chart(
            np.zeros(1),
            {},
            title="x_t on 2 principal components",
            xaxis="PC 1",
            yaxis="PC 2",
            markers=False,
        )
        pca = r["pca"]
        colors = figures.position_colors(pca[-1])
        for k in range(pca.shape[1]):
            fig.add_scatter(
                x=pca[:, k, 0],
                y=pca[:, k, 1],
                mode="lines",
                line={"color": colors[k], "width": 1.5},
                showlegend=False,
            )
        fig.add_scatter(x=pca[0, :, 0], y=pca[0, :, 1], mode="markers", name="x_T", marker={"color": "grey"})
        fig.add_scatter(
            x=pca[-1, :, 0],
            y=pca[-1, :, 1],
            mode="markers",
            name="sample",
            marker={"color": colors, "size": 9},
        )
        fig.update_layout(height=480)
        st.plotly_chart(fig, theme=None, key="pca_chart")
    st.subheader("x_t (top) and x0_hat (bottom) over the steps")
    for row in range(min(3, r["states"].shape[1])):
        xs, tt = strip(r["states"], r["t"], row)
        x0, _ = strip(r["x0"], r["t"], row)
        st.image(np.concatenate([xs, x0], 0), caption="t = " + ", ".join(f"{v:.2f}" for v in tt), clamp=True)
    quality_panel(s)


@st.fragment
def quality_panel(s: Settings) -> None:
    if not st.toggle(
        f"measure the classifier-feature Fréchet distance ({QUALITY_N} samples)", key="img_quality"
    ):
        return
    try:
        q = measure(s)
    except (ValueError, RuntimeError) as e:
        C.show_error(e, "quality")
        return
    c = st.columns(4)
    c[0].metric("Fréchet distance (classifier features)", f"{q['frechet']:.3f}")
    c[1].metric("floor (train vs test)", f"{q['floor']:.3f}")
    c[2].metric("classifier confidence", f"{q['confidence']:.3f}")
    c[3].metric("classifier test accuracy", f"{q['test_accuracy']:.3f}")
    st.bar_chart(q["class_histogram"], height=200)
    st.caption(
        "Not Inception FID: the features are those of a small classifier trained on the training split."
    )


settings = controls()
C.sync_url()
st.title("Images: score-based sampling of small pictures")
try:
    result = compute(settings)
except (ValueError, C.CheckpointError, SamplerDiverged, RuntimeError) as e:
    C.show_error(e)
    st.info(
        "The image pages use the shipped models `digits-vp`, `shapes-vp` and their classifiers "
        "(`geoflow train --data digits`)."
    )
else:
    render(settings, result)
