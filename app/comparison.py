"""A/B comparison: two runs on the same initial noise and Brownian path, side by side in one figure.

Run A is the page's own settings; run B shares A's data, SDE, seed and particle count (hence the
same x_0, x_T and sampler noise: ``geoflow.run`` draws them from separate streams of the one
seed) and may differ in anything else: sampler, N, spacing, projection and its strength, score
source, final denoising step. Both panels of one plotly figure share axes and one slider / play
button (:func:`geoflow.animation.comparison_animation`); each run's quality (W2 and KL to data
with their floors) and NFE sit beside it. B's settings live in the URL as ``b_<name>``, so a link
reproduces the comparison. The Projection page is a preset of this comparison (A: Euler-Maruyama,
B: a predict-project variant).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cache
import numpy as np
import sources
import state
import streamlit as st
import widgets as W

from geoflow import animation, figures
from geoflow.overlays import plot_bounds
from geoflow.registry import PREDICT_PROJECT_SAMPLERS, STANDARD_SAMPLERS, get_sampler
from geoflow.run import RunSpec, ScoreSource, Trajectory


@dataclass
class Side:
    """One run of a comparison: its spec, score, trajectory, overlays and final quality."""

    name: str  # "A" / "B"
    spec: RunSpec
    src: ScoreSource
    traj: Trajectory
    layers: list[figures.Layer]
    quality: dict


B_SAMPLERS = tuple(dict.fromkeys((*STANDARD_SAMPLERS, *PREDICT_PROJECT_SAMPLERS)))


def _reset_b_strength(page: str) -> None:
    """A new B sampler starts from its own default strength (units differ between variants)."""
    info = get_sampler(st.session_state[state.skey(page, "b_sampler")])
    if info.has_strength:
        st.session_state[state.skey(page, "b_strength")] = float(info.default_strength)  # type: ignore[arg-type]


def b_controls(page: str, a: RunSpec, c: Any) -> RunSpec:
    """Run B's settings (URL names ``b_sampler``, ``b_steps``...): any of them may differ from A's.

    B's sampler is any standard sampler (Euler-Maruyama with the projection toggle becomes the
    paper's predict-project) or any predict-project variant, with its T and strength.
    """
    names = list(B_SAMPLERS)
    c.selectbox(
        "B: sampler",
        names,
        key=state.url_state(page, "b_sampler", a.sampler if a.sampler in names else "euler_maruyama", names),
        format_func=W.label,
        on_change=_reset_b_strength,
        args=(page,),
    )
    sampler = st.session_state[state.skey(page, "b_sampler")]
    info = get_sampler(sampler)
    variant = info.family == "predict_project"
    c.slider(
        "B: steps N", 1, W.MAX_STEPS, key=state.url_state(page, "b_steps", a.steps, lo=1, hi=W.MAX_STEPS)
    )
    c.selectbox(
        "B: time spacing",
        W.SPACING_CHOICES,
        key=state.url_state(page, "b_spacing", "default", W.SPACING_CHOICES),
    )
    proj = c.toggle(
        "B: projection step (predict-project)",
        key=state.url_state(page, "b_project", True),
        disabled=variant,
        help="turns B's Euler-Maruyama into predict-project; other samplers ignore it",
    )
    projected = variant or (bool(proj) and sampler == "euler_maruyama")
    run_sampler = sampler if variant else ("predict_project" if projected else sampler)
    run_info = get_sampler(run_sampler)
    kind = c.selectbox(
        "B: projection T",
        W.T_KINDS,
        key=state.url_state(page, "b_projection", W.T_KINDS[0], W.T_KINDS),
        disabled=not (projected and run_info.takes_projection),
    )
    default = float(run_info.default_strength if run_info.has_strength else 1.0)  # type: ignore[arg-type]
    strength = c.number_input(
        "B: projection strength",
        0.0,
        1000.0,
        step=0.05,
        disabled=not (projected and run_info.has_strength),
        key=state.url_state(page, "b_strength", default, lo=0.0, hi=1000.0),
        help=f"default for {run_info.label}: {default:g}",
    )
    c.selectbox(
        "B: score",
        W.SCORES,
        key=state.url_state(page, "b_score", a.score, W.SCORES),
        help="e.g. exact for A and pretrained for B: the learning error alone",
    )
    c.toggle("B: final denoising step", key=state.url_state(page, "b_final_denoise", a.final_denoise))
    g = lambda name: st.session_state[state.skey(page, f"b_{name}")]  # noqa: E731
    return replace(
        a,
        sampler=run_sampler,
        steps=int(g("steps")),
        spacing=g("spacing"),
        projection=kind,
        strength=float(strength) if projected and run_info.has_strength else None,
        score=g("score"),
        final_denoise=bool(g("final_denoise")),
    )


def open_on_flows(a: RunSpec, b: RunSpec) -> None:
    """Carry a comparison to the Flows page's A/B view (a button callback; the page reads the values)."""
    values: dict[str, Any] = {
        "density": a.data,
        "score": a.score,
        "sde": a.sde,
        "sampler": a.sampler,
        "steps": a.steps,
        "spacing": a.spacing,
        "project": False,
        "final_denoise": a.final_denoise,
        "seed": a.seed,
        "n": a.n,
        "compare": True,
        "b_sampler": b.sampler,
        "b_steps": b.steps,
        "b_spacing": b.spacing,
        "b_project": True,
        "b_projection": b.projection if b.projection in W.T_KINDS else W.T_KINDS[0],
        "b_strength": float(b.effective_strength() or 0.0),
        "b_score": b.score,
        "b_final_denoise": b.final_denoise,
    }
    for name, v in values.items():
        st.session_state[f"goto.{state.skey('flows', name)}"] = v
        st.session_state.pop(state.skey("flows", name), None)


def compute(specs: list[tuple[str, RunSpec]], which: tuple[str, ...] = ()) -> tuple[Any, list[Side]] | None:
    """Run every side (cached), with its overlays and final quality; None after showing an error."""
    sides: list[Side] = []
    density = None
    for name, spec in specs:
        got = W.prepare(spec)
        if got is None:
            return None
        src, density, traj = got
        dk = sources.density_key(spec.data)
        layers: list[figures.Layer] = []
        if which:
            try:
                arrays, notes = cache.overlay_arrays(which, spec, dk, src.key, density, src, traj)
                layers = [figures.overlay_layer(a) for a in arrays]
                for n in notes:
                    st.info(f"{name}: {n}")
            except W.APP_ERRORS as e:
                st.info(f"{name}: overlays failed: {e}")
        q = cache.final_quality(spec, dk, src.key, density, traj.final, bool(traj.error))
        sides.append(Side(name, spec, src, traj, layers, q))
    return density, sides


def side_title(side: Side) -> str:
    """A panel's heading: the run's name and sampler, then its N, NFE and score on a second line."""
    t = side.traj
    return f"{side.name}: {t.sampler_label}<br>N={side.spec.steps}, NFE={t.nfe} · {t.source_label}"


def figure(
    density: Any,
    sides: list[Side],
    *,
    color_by_noise: bool = False,
    generation_only: bool = False,
    title: str = "",
    uirevision: str = "ab",
    **kwargs: Any,
) -> animation.AnimatedFigure:
    """The runs side by side: one figure, shared axes, one slider and play button."""
    return animation.comparison_animation(
        [s.traj for s in sides],
        [side_title(s) for s in sides],
        bounds=plot_bounds(density, sides[0].src.sde),
        layers=[s.layers for s in sides],
        color_by_noise=color_by_noise,
        title=title or " vs ".join(s.traj.sampler_label for s in sides),
        generation_only=generation_only,
        uirevision=uirevision,
        **kwargs,
    )


def quality_text(q: dict) -> str:
    parts = [f"W2 to data {q['w2']:.3f} (floor {q['w2_floor']:.3f})"]
    if np.isfinite(q["kl"]):
        parts.append(f"KL {q['kl']:.3f} (floor {q['kl_floor']:.3f})")
    return " · ".join(parts)


def quality_columns(sides: list[Side]) -> None:
    """Each run's NFE and quality with the floors, in columns under its panel."""
    cols = st.columns(len(sides))
    for col, s in zip(cols, sides, strict=True):
        with col:
            if s.traj.error:
                st.error(f"{s.name} diverged: {s.traj.error}")
            m = st.columns(3)
            m[0].metric(f"{s.name}: NFE", s.traj.nfe, help=f"{s.spec.steps} steps, {s.traj.spacing} grid")
            m[1].metric(
                f"{s.name}: W2 to data",
                f"{s.quality['w2']:.3f}",
                help=f"floor {s.quality['w2_floor']:.3f} (data vs data, same n)",
            )
            if np.isfinite(s.quality["kl"]):
                m[2].metric(
                    f"{s.name}: KL (k-NN)",
                    f"{s.quality['kl']:.3f}",
                    help=f"floor {s.quality['kl_floor']:.3f} (true samples)",
                )


def same_start(sides: list[Side]) -> bool:
    """Do the runs start from the same x_T (the comparison's premise)?"""
    return all(np.array_equal(s.traj.noise, sides[0].traj.noise) for s in sides)
