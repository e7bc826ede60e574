"""Images: sample grids, the x_t / x0_hat strip, a PCA path of x_t, classifier-feature quality."""

from __future__ import annotations

from dataclasses import dataclass, replace

import cache
import numpy as np
import state
import streamlit as st
import torch
import widgets as W

from geoflow import figures
from geoflow.images import IMAGE_SETS, image_shape, load_image_set
from geoflow.metrics import image_quality, memorisation
from geoflow.registry import SAMPLER_NAMES, get_sampler
from geoflow.run import RunSpec, pretrained_available, pretrained_problem, run
from geoflow.samplers import SamplerDiverged

PAGE = "images"
MAX_GRID = 64
QUALITY_N = 1000
STRIP_SAMPLES = 6
STRIP_COLUMNS = 10
NEAREST_SHOWN = 16  # samples shown beside their nearest training image
T_KINDS = ("tweedie", "learned")
# samplers for the VP image models: every sampler that suits the VP SDE
IMAGE_SAMPLERS = tuple(n for n in SAMPLER_NAMES if "vp" in get_sampler(n).sdes)


@dataclass(frozen=True)
class Settings:
    run: RunSpec  # the grid's run (start from the prior)


def controls() -> Settings:
    sb = st.sidebar
    sb.header("Image settings")
    data = sb.selectbox("image set", IMAGE_SETS, key=state.url_state(PAGE, "data", IMAGE_SETS[0], IMAGE_SETS))
    key = state.url_state(PAGE, "sampler", "euler_maruyama", IMAGE_SAMPLERS)
    sb.selectbox(
        "sampler", IMAGE_SAMPLERS, key=key, format_func=W.label, on_change=W.reset_strength, args=(PAGE, key)
    )
    sampler = st.session_state[key]
    info = get_sampler(sampler)
    steps = sb.slider("steps N", 1, W.MAX_STEPS, key=state.url_state(PAGE, "steps", 20, lo=1, hi=W.MAX_STEPS))
    kind = W.t_control(PAGE, sb, T_KINDS, disabled=not info.takes_projection)
    strength = W.strength_control(PAGE, sb, sampler, disabled=not info.has_strength)
    fd = sb.toggle("final denoising step", key=state.url_state(PAGE, "final_denoise", True))
    seed = sb.number_input("seed", 0, W.MAX_SEED, key=state.url_state(PAGE, "seed", 0, lo=0, hi=W.MAX_SEED))
    n = sb.select_slider(
        "samples in the grid",
        [16, 36, 64],
        key=state.url_state(PAGE, "n", 36, [16, 36, 64]),
        help=f"at most {MAX_GRID}; the quality number uses {QUALITY_N}",
    )
    spec = RunSpec(
        data=data,
        score="pretrained",
        sampler=sampler,
        steps=int(steps),
        projection=kind,
        strength=float(strength) if info.has_strength else None,
        final_denoise=bool(fd),
        seed=int(seed),
        n=int(n),
        start="prior",
        record=min(int(n), STRIP_SAMPLES * 4),
    )
    return Settings(spec)


def compute(s: Settings) -> dict:
    """The grid's run and its PCA path, in the byte-budgeted run cache shared by every session."""
    # keyed by the RunSpec: this page's Settings class is redefined at every script run
    return cache.cached(("images", s.run), lambda: _compute(s), "sampling images ...")


def _compute(s: Settings) -> dict:
    traj = run(s.run)
    states = traj.paths.reshape(traj.paths.shape[0], traj.paths.shape[1], -1)  # (F, k, D)
    flat = states.reshape(-1, states.shape[-1])
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    pca = ((states - mean) @ vt[:2].T).astype(np.float32)  # (F, k, 2)
    return {
        "grid": traj.final,
        "states": traj.paths,
        "x0": traj.x0_hat,
        "t": traj.times,
        "nfe": traj.nfe,
        "pca": pca,
        "label": traj.sampler_label,
        "error": traj.error,
    }


@st.cache_data(max_entries=16, show_spinner=f"sampling {QUALITY_N} images for the quality number ...")
def measure(s: Settings) -> dict:
    from geoflow.checkpoints import load_pretrained

    name = f"{s.run.data}-classifier"
    if not pretrained_available(name):
        raise ValueError(f"no classifier is shipped for {s.run.data}: the quality number needs {name}")
    clf = load_pretrained(name)
    x = torch.from_numpy(run(replace(s.run, n=QUALITY_N, record=0)).final)
    q = image_quality(x, s.run.data, clf)
    train, _ = load_image_set(s.run.data, "train")
    test, _ = load_image_set(s.run.data, "test")
    mem = memorisation(x, train, test)
    k = NEAREST_SHOWN
    pairs = torch.stack([x[:k], train[torch.as_tensor(mem["nearest_train_index"][:k])]], 1).flatten(0, 1)
    q["memorisation"] = {key: v for key, v in mem.items() if not isinstance(v, np.ndarray)}
    q["pairs"] = figures.image_grid(pairs, nrow=2 * 8, scale=6)
    return q


def strip(states: np.ndarray, t: np.ndarray, row: int) -> np.ndarray:
    pick = np.unique(np.linspace(0, states.shape[0] - 1, STRIP_COLUMNS).round().astype(int))
    return figures.image_grid(torch.as_tensor(states[pick, row]), nrow=len(pick), scale=6), t[pick]


def render(s: Settings, r: dict) -> None:
    if r["error"]:
        st.error(f"The sampler diverged: {r['error']}")
    st.caption(f"{r['label']}, N = {s.run.steps}, NFE = {r['nfe']} (seed {s.run.seed})")
    c1, c2 = st.columns([1, 1])
    with c1:
        st.subheader("samples")
        grid = figures.image_grid(torch.as_tensor(r["grid"]), nrow=int(np.sqrt(s.run.n)), scale=6)
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
    except W.APP_ERRORS as e:
        W.show_error(e, "quality")
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
    m = q["memorisation"]
    st.subheader("Memorisation check")
    c = st.columns(3)
    c[0].metric(
        "median nearest-train / nearest-held-out distance",
        f"{m['median_ratio']:.3f}",
        help="per sample: distance to its nearest training image over the distance to its nearest "
        "held-out image",
    )
    c[1].metric("reference (held-out images)", f"{m['reference_median_ratio']:.3f}")
    c[2].metric("near-copies of training images", f"{100 * m['copy_fraction']:.1f} %")
    if m["memorises"]:
        st.warning(
            "The samples sit much closer to training images than held-out images do: the model copies."
        )
    else:
        st.success(
            "The samples are no closer to the training set than held-out images are: no sign of copying."
        )
    st.image(q["pairs"], clamp=True, caption="each sample (left) beside its nearest training image (right)")


def no_model_message(data: str) -> str:
    """What to do for an image set whose score model is not shipped (a message, not an error)."""
    c, h, w = image_shape(data)
    return (
        f"No trained score model is shipped for the **{data}** image set ({h}x{w}, "
        f"{'colour' if c == 3 else 'grey'}) yet, so there is nothing to sample. Train one on a GPU "
        f"with `scripts/train_gpu.sh` (or `geoflow train --data {data} --sde vp --out "
        f"pretrained/{data}-vp.safetensors` plus a manifest entry); the page uses `{data}-vp` as soon "
        f"as `pretrained/MANIFEST.json` lists it. The other image sets work now."
    )


settings = controls()
state.sync_url()
st.title("Images: score-based sampling of small pictures")
state.show_notices()
if not pretrained_available(f"{settings.run.data}-vp"):
    problem = pretrained_problem(f"{settings.run.data}-vp")
    if "not shipped" in problem:
        st.info(no_model_message(settings.run.data), icon=":material/info:")
    else:  # a corrupt or mismatched file: this model is unavailable, the rest of the app works
        st.error(state.plain(f"The shipped model is unavailable: {problem}"), icon=":material/error:")
else:
    try:
        result = compute(settings)
    except (*W.APP_ERRORS, SamplerDiverged) as e:
        W.show_error(e)
        st.info(
            f"The Images page uses the shipped models `{settings.run.data}-vp`, "
            f"`{settings.run.data}-vp-proj` and `{settings.run.data}-classifier` "
            f"(`geoflow train --data {settings.run.data}`)."
        )
    else:
        render(settings, result)
