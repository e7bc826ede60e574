"""Shared controls and panels of the pages: the run settings, errors, exports.

``run_controls`` and ``projection_controls`` read and write settings through :mod:`state`; choices,
labels and defaults come from ``geoflow.registry``, so what a page offers is what the library runs.
"""

from __future__ import annotations

from typing import Any

import cache
import sources
import state
import streamlit as st

from geoflow.checkpoints import CheckpointError
from geoflow.registry import PREDICT_PROJECT_SAMPLERS, SAMPLERS, STANDARD_SAMPLERS, get_sampler
from geoflow.run import RunSpec, ScoreSource, Trajectory
from geoflow.sde import SDE_NAMES

MAX_PARTICLES = 2000  # the animation sends every frame to the browser
MAX_STEPS = 200
MAX_SEED = 10_000
SCORES = ("auto", "exact", "pretrained", "session")
SPACING_CHOICES = ("default", "uniform", "quadratic", "logsnr")
T_KINDS = ("tweedie", "learned", "exact")
APP_ERRORS = (ValueError, CheckpointError, RuntimeError)
EXPORT_SIZE_LABELS = {"screen": "screen (1200 x 800)", "slide": "slide (1920 x 1080, large fonts)"}


def label(name: str) -> str:
    return SAMPLERS[name].label if name in SAMPLERS else name


def show_error(e: BaseException, what: str = "") -> None:
    """A readable error box instead of a traceback (user text shown as plain text)."""
    prefix = f"{what}: " if what else ""
    st.error(state.plain(f"{prefix}{state.error_text(e)}"), icon=":material/error:")


def _data_controls(page: str, c: Any) -> None:
    dens = sources.density_choices()
    c.selectbox("density", dens, key=state.url_state(page, "density", "eight_gaussians", dens))
    c.selectbox(
        "score",
        SCORES,
        key=state.url_state(page, "score", "auto", SCORES),
        help="auto: your model for your data, else the shipped pretrained model, "
        "else the exact mixture score",
    )
    c.radio(
        "SDE",
        SDE_NAMES,
        horizontal=True,
        key=state.url_state(page, "sde", "vp", SDE_NAMES),
        format_func=str.upper,
    )


def _steps_controls(page: str, c: Any, default_steps: int = 50) -> None:
    c.slider(
        "steps N",
        1,
        MAX_STEPS,
        key=state.url_state(page, "steps", default_steps, lo=1, hi=MAX_STEPS),
        help=f"at most {MAX_STEPS}",
    )
    c.selectbox(
        "time spacing",
        SPACING_CHOICES,
        key=state.url_state(page, "spacing", "default", SPACING_CHOICES),
        help="default: the sampler's own choice (uniform for EM, log-SNR for DDIM / DPM-Solver / Heun)",
    )


def _tail_controls(page: str, c: Any, n_default: int = 1000) -> None:
    c.toggle("final denoising step", key=state.url_state(page, "final_denoise", True))
    c.number_input("seed", 0, MAX_SEED, step=1, key=state.url_state(page, "seed", 0, lo=0, hi=MAX_SEED))
    c.slider(
        "particles",
        50,
        MAX_PARTICLES,
        step=50,
        key=state.url_state(page, "n", n_default, lo=50, hi=MAX_PARTICLES),
        help=f"at most {MAX_PARTICLES} (the animation sends every frame to the browser)",
    )


def reset_strength(page: str, sampler_key: str) -> None:
    """A new sampler starts from its own default strength (units differ between variants)."""
    info = get_sampler(st.session_state[sampler_key])
    if info.has_strength:
        st.session_state[state.skey(page, "strength")] = float(info.default_strength)  # type: ignore[arg-type]


def strength_control(page: str, c: Any, sampler: str, disabled: bool = False) -> float:
    """The projection strength, defaulting to the sampler's registry default."""
    info = get_sampler(sampler)
    default = float(info.default_strength if info.has_strength else 1.0)  # type: ignore[arg-type]
    return float(
        c.number_input(
            "projection strength",
            0.0,
            1000.0,
            step=0.05,
            key=state.url_state(page, "strength", default, lo=0.0, hi=1000.0),
            disabled=disabled,
            help=f"default for {info.label}: {default:g}",
        )
    )


def t_control(page: str, c: Any, kinds: tuple[str, ...], disabled: bool) -> str:
    return c.selectbox(
        "projection T",
        kinds,
        key=state.url_state(page, "projection", kinds[0], kinds),
        disabled=disabled,
        help="learned: the shipped projection network; tweedie: training-free; "
        "exact: the mixture's exact score",
    )


def run_controls(page: str, container: Any = None) -> RunSpec:
    """The Flows page's run settings (a projection toggle turns Euler-Maruyama into predict-project)."""
    c = container if container is not None else st.sidebar
    _data_controls(page, c)
    names = list(STANDARD_SAMPLERS)
    c.selectbox(
        "sampler", names, key=state.url_state(page, "sampler", "euler_maruyama", names), format_func=label
    )
    _steps_controls(page, c)
    proj = c.toggle(
        "projection step (predict-project)",
        key=state.url_state(page, "project", False),
        help="turns Euler-Maruyama into the paper's predict-project sampler; other samplers ignore it",
    )
    kind = t_control(page, c, T_KINDS, disabled=not proj)
    strength = strength_control(page, c, "predict_project", disabled=not proj)
    _tail_controls(page, c)
    ss = st.session_state
    sampler = ss[state.skey(page, "sampler")]
    projected = bool(proj) and sampler == "euler_maruyama"
    return _spec(page, "predict_project" if projected else sampler, kind, strength if projected else None)


def projection_controls(page: str, container: Any = None) -> RunSpec:
    """The Projection page's settings: the data, N, and one predict-project variant with its T."""
    c = container if container is not None else st.sidebar
    _data_controls(page, c)
    _steps_controls(page, c, default_steps=20)
    names = list(PREDICT_PROJECT_SAMPLERS)
    key = state.url_state(page, "sampler", names[0], names)
    c.selectbox(
        "projection sampler", names, key=key, format_func=label, on_change=reset_strength, args=(page, key)
    )
    sampler = st.session_state[key]
    takes_t = get_sampler(sampler).takes_projection
    kind = t_control(page, c, T_KINDS, disabled=not takes_t)
    if not takes_t:
        c.caption("this variant projects with the score itself: it takes no T")
    strength = strength_control(page, c, sampler)
    _tail_controls(page, c)
    return _spec(page, sampler, kind, strength)


def _spec(page: str, sampler: str, kind: str, strength: float | None) -> RunSpec:
    g = lambda name: st.session_state[state.skey(page, name)]  # noqa: E731
    return RunSpec(
        data=g("density"),
        score=g("score"),
        sde=g("sde"),
        sampler=sampler,
        steps=int(g("steps")),
        spacing=g("spacing"),
        projection=kind,
        strength=strength,
        final_denoise=bool(g("final_denoise")),
        seed=int(g("seed")),
        n=int(g("n")),
    )


def prepare(spec: RunSpec) -> tuple[ScoreSource, Any, Trajectory] | None:
    """Resolve the score and compute (cached) the trajectory; shows a readable error and returns None."""
    for note in sources.pretrained_notes(spec):  # a corrupt file in pretrained/: named, not fatal
        st.warning(state.plain(note), icon=":material/warning:")
    try:
        density = sources.resolve_density(spec.data)
        src = sources.score_source(spec)
        traj = cache.trajectory(spec, sources.density_key(spec.data), src.key, density, src)
    except APP_ERRORS as e:
        show_error(e)
        return None
    return src, density, traj


def export_panel(fig: Any, frame: int, csv: Any, key: str) -> None:
    """Exports of what the chart shows: PNG / SVG of the current frame, GIF / MP4 of the animation.

    Every export is rendered by kaleido from the same plotly figure the chart draws (every overlay,
    the per-frame notes, title, axes, legend, colours), at screen or slide size. Rendering costs
    seconds (a movie: about half a second a frame), so each is made on request, with a progress
    bar, then offered for download. ``csv``: the positions' CSV (bytes or a callable), or None.
    """
    from geoflow import export
    from geoflow.animation import still_figure

    names = list(export.EXPORT_STYLES)
    size = st.radio(
        "export size",
        names,
        horizontal=True,
        key=f"{key}_style",
        format_func=lambda n: EXPORT_SIZE_LABELS.get(n, n),
    )
    style = export.EXPORT_STYLES[size]
    shown = export.animation_frames(len(fig.raw_frames))
    st.caption(
        f"GIF / MP4: {len(shown)} frames of {len(fig.raw_frames)} (at most {export.MAX_ANIMATION_FRAMES}), "
        "each rendered from this figure; PNG / SVG: the frame set by the step buttons."
    )
    cols = st.columns(5)
    if csv is not None:
        cols[4].download_button(
            "CSV of positions", csv, file_name=f"{key}.csv", mime="text/csv", key=f"{key}_csv"
        )
    store = st.session_state.setdefault("exports", {})
    for col, fmt in zip(cols[:4], ("png", "svg", "gif", "mp4"), strict=True):
        sk = f"{key}_{fmt}"
        if col.button(f"make {fmt.upper()}", key=f"{sk}_make", help=f"render this export ({size}) in memory"):
            try:
                if fmt in ("png", "svg"):
                    with st.spinner(f"rendering {fmt.upper()} ..."):
                        store[sk] = export.static_image(still_figure(fig, frame), fmt, style=style)  # type: ignore[arg-type]
                else:
                    bar = col.progress(0.0, text=f"{len(shown)} frames ...")

                    def progress(done: int, total: int, bar: Any = bar) -> None:
                        bar.progress(done / total, text=f"frame {done} of {total}")

                    imgs = export.render_frames(fig, shown, style=style, progress=progress)
                    with st.spinner(f"encoding {fmt.upper()} ..."):
                        store[sk] = export.gif_bytes(imgs) if fmt == "gif" else export.mp4_bytes(imgs)
                    bar.empty()
            except export.ExportUnavailable as e:
                col.warning(str(e))
            except (OSError, RuntimeError, ValueError) as e:
                col.error(f"{fmt.upper()} export failed: {e}")
        if sk in store:
            mime = {"png": "image/png", "svg": "image/svg+xml", "gif": "image/gif", "mp4": "video/mp4"}[fmt]
            col.download_button(
                f"download {fmt.upper()}",
                store[sk],
                file_name=f"{key}.{fmt}",
                mime=mime,
                key=f"{sk}_dl",
                icon=":material/download:",
            )
