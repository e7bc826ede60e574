"""``st.cache_*`` wrappers around geoflow calls, and nothing else.

Caches are shared by every session of the process: the same spec gives the same result, computed
once. Keys are the frozen specs plus the density's and score's identities (``density_key``,
``source.key``); the objects themselves are passed with a leading underscore (not hashed).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from geoflow import overlays, run
from geoflow.densities import Density, get_density


@st.cache_resource(show_spinner=False)
def preset_density(name: str) -> Density:
    """A preset density (shared, read-only)."""
    return get_density(name)


@st.cache_data(max_entries=48, show_spinner="sampling ...")
def trajectory(
    spec: run.RunSpec, density_key: str, source_key: str, _density: Density | None, _source: run.ScoreSource
) -> run.Trajectory:
    """Cached :func:`geoflow.run.run`."""
    return run.run(spec, density=_density, source=_source)


@st.cache_data(max_entries=32, show_spinner="overlays ...")
def overlay_arrays(
    which: tuple[str, ...],
    spec: run.RunSpec,
    density_key: str,
    source_key: str,
    _density: Density,
    _source: run.ScoreSource,
    _traj: run.Trajectory,
) -> tuple[list[overlays.Overlay], list[str]]:
    """Cached :func:`geoflow.overlays.compute_overlays` (the trajectory is determined by the keys)."""
    return overlays.compute_overlays(which, spec, _source, _density, _traj, density_key=density_key)


@st.cache_data(max_entries=32, show_spinner="W2 and free energy along the path ...")
def path_metrics(
    spec: run.RunSpec, density_key: str, source_key: str, _density: Density, _source: run.ScoreSource, _traj
) -> dict:
    """Cached :func:`geoflow.overlays.path_metrics`."""
    return overlays.path_metrics(spec, _source.sde, _density, _traj)


@st.cache_data(max_entries=32, show_spinner="W2 to the JKO path and to p_t at every frame ...")
def _frame_agreement(
    spec: run.RunSpec, density_key: str, source_key: str, with_jko: bool, _density: Density, _sde, _traj, _jko
) -> dict:
    return overlays.frame_agreement(spec, _sde, _density, _traj, _jko)


def frame_agreement(
    spec: run.RunSpec,
    density_key: str,
    source_key: str,
    _density: Density,
    _source: run.ScoreSource,
    _traj: run.Trajectory,
    _jko: np.ndarray | None,
) -> dict:
    """Cached :func:`geoflow.overlays.frame_agreement` (``_jko``: the JKO overlay's particles or None)."""
    has_jko = _jko is not None
    return _frame_agreement(spec, density_key, source_key, has_jko, _density, _source.sde, _traj, _jko)


@st.cache_data(max_entries=64, show_spinner=False)
def final_quality(
    spec: run.RunSpec,
    density_key: str,
    source_key: str,
    _density: Density,
    _final: np.ndarray,
    diverged: bool,
) -> dict:
    """Cached :func:`geoflow.overlays.final_quality` of a run's final samples."""
    return overlays.final_quality(spec, _density, _final, diverged)
