"""Caches around geoflow calls, shared by every session of the process (same spec, same result, once).

Keys are the frozen specs plus the density's and score's identities (``density_key``,
``source.key``); the objects themselves are passed with a leading underscore (not part of the key).

Runs and overlays (megabytes each) live in one byte-budgeted LRU (:class:`serving.ByteLRU`,
``GEOFLOW_RUN_CACHE_MB``, default 256 MB): a hit hands back the shared, read-only object (no pickle
copy per rerun, unlike ``st.cache_data``), and the worst mix of settings cannot grow the server past
the budget. Sampler runs are admitted through a first-come-first-served queue with one slot per
core (:data:`INTERACTIVE`); overlays that take seconds (JKO, the W2 geodesic) and the path metrics
through a one-slot queue of their own (:data:`HEAVY`), so they never hold up step changes; so do
the exact-W2 numbers of a run (they are computed after its chart is sent).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from dataclasses import replace
from typing import Any

import live_chart
import numpy as np
import serving
import streamlit as st
import training

from geoflow import overlays, run
from geoflow.densities import Density, get_density

RUN_CACHE_MB = float(os.environ.get("GEOFLOW_RUN_CACHE_MB", "256"))
RUNS = serving.ByteLRU(int(RUN_CACHE_MB * 2**20))
# poll_calls: a waiting run updates its "queued" box every poll, and Streamlit stops a script at such a
# call when its user has already changed the setting again: a stale request leaves the queue
INTERACTIVE = serving.WorkQueue(min(4, os.cpu_count() or 2), "sampler runs", poll_calls=True)
HEAVY = serving.WorkQueue(1, "overlays and metrics", poll_calls=True)
HEAVY_OVERLAYS = ("JKO path", "W2 geodesic", "warped grid")
# every page run of every session (slots unbounded: a counter): the server is idle when none runs
PAGE_RUNS = serving.WorkQueue(1 << 30, "page runs")
BUSY_SIGNALS: list[Any] = [INTERACTIVE.busy, HEAVY.busy, training.active]  # a training runs or waits
PREFETCH = serving.Prefetcher(
    RUNS,
    PAGE_RUNS,
    others=[lambda: any(f() for f in BUSY_SIGNALS)],
    enabled=os.environ.get("GEOFLOW_PREFETCH", "1") != "0",
)
atexit.register(PREFETCH.shutdown)
TIMING_LOG = os.environ.get("GEOFLOW_TIMING_LOG", "")
_log_lock = threading.Lock()


def log_timing(**fields: Any) -> None:
    """Append one JSON line to ``GEOFLOW_TIMING_LOG`` (benchmarks read it; off by default)."""
    if not TIMING_LOG:
        return
    fields.setdefault("wall", time.time())
    with _log_lock, open(TIMING_LOG, "a") as f:
        f.write(json.dumps(fields) + "\n")


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "bare"


class _Queued:
    """Tells the user where their run stands in the queue (an info box that disappears)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.box: Any = None

    def __call__(self, ahead: int) -> None:
        try:
            if self.box is None:
                self.box = st.empty()
            self.box.info(
                f"queued: {ahead} {self.what} ahead of yours on this server", icon=":material/schedule:"
            )
        except Exception:  # noqa: BLE001 - no script context (a test or a background caller)
            pass

    def clear(self) -> None:
        if self.box is not None:
            self.box.empty()


def _admit(queue: serving.WorkQueue, what: str, spinner: str | None):
    """A context manager factory: wait for a slot (showing "queued"), then a spinner while working."""
    from contextlib import contextmanager

    @contextmanager
    def admit():
        q = _Queued(what)
        with queue.slot(q):
            q.clear()
            if spinner is None:
                yield
            else:
                with st.spinner(spinner):
                    yield

    return admit


@st.cache_resource(show_spinner=False)
def preset_density(name: str) -> Density:
    """A preset density (shared, read-only)."""
    return get_density(name)


def trajectory(
    spec: run.RunSpec, density_key: str, source_key: str, _density: Density | None, _source: run.ScoreSource
) -> run.Trajectory:
    """Cached :func:`geoflow.run.run` (shared, read-only arrays)."""
    key = ("trajectory", spec, density_key, source_key)
    t0 = time.perf_counter()

    def compute() -> run.Trajectory:
        c0 = time.perf_counter()
        traj = run.run(spec, density=_density, source=_source)
        log_timing(
            what="sampler", ms=1000 * (time.perf_counter() - c0), steps=spec.steps, sampler=spec.sampler
        )
        return traj

    traj, how = RUNS.get_or_compute(key, compute, admit=_admit(INTERACTIVE, "runs", "sampling ..."))
    log_timing(what="trajectory", how=how, ms=1000 * (time.perf_counter() - t0), steps=spec.steps)
    return traj


def cached(key: tuple, compute, spinner: str | None = None) -> Any:
    """Any large result (a page's run and what is derived from it) in the byte-budgeted run cache."""
    value, _ = RUNS.get_or_compute(key, compute, admit=_admit(INTERACTIVE, "runs", spinner))
    return value


def figure(key: tuple, build) -> Any:
    """A built animated figure and its packed bytes, shared by every session whose view has the same ``key``.

    A class following the teacher has one view: the figure is built and packed once, not once
    per session (about 30 ms of the server's one interpreter each). ``key`` must hold everything the
    figure depends on (the page's settings *as values*: a class defined in a page script is a new
    class at every run, so its instances never compare equal; the density's and score's keys, the
    display style). An
    ``AnimatedFigure`` is never changed after it is built (its ``to_dict`` is its raw content), so
    the packed bytes stay its own.
    """

    def make() -> Any:
        fig = build()
        live_chart.figure_bytes(fig)  # the packed bytes the live chart sends, made once for every session
        return fig

    # the raw figure (arrays as base64 text, about 3x the packed size) and its packed bytes
    value, _ = RUNS.get_or_compute(
        ("figure", *key), make, size=lambda f: 4 * len(live_chart.figure_bytes(f)[0])
    )
    return value


def drop_figures() -> int:
    """Drop every cached figure from the run cache (the runs stay); returns how many went."""
    return RUNS.drop_where(lambda key: isinstance(key, tuple) and bool(key) and key[0] == "figure")


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
    key = ("overlays", which, spec, density_key, source_key)
    heavy = any(w in HEAVY_OVERLAYS for w in which)
    queue = HEAVY if heavy else INTERACTIVE
    admit = _admit(queue, "overlay jobs" if heavy else "runs", "overlays ...")
    value, _ = RUNS.get_or_compute(
        key,
        lambda: overlays.compute_overlays(which, spec, _source, _density, _traj, density_key=density_key),
        admit=admit,
    )
    return value


def _heavy(key: tuple, compute, spinner: str | None) -> Any:
    """A number-sized result made in the one-slot heavy queue (waiting there is shown as "queued").

    Kept in the run cache, not ``st.cache_data``: Streamlit replays the elements a cached function
    creates (the "queued" box) on later hits.
    """
    value, _ = RUNS.get_or_compute(key, compute, admit=_admit(HEAVY, "metric jobs", spinner))
    return value


def path_metrics(
    spec: run.RunSpec, density_key: str, source_key: str, _density: Density, _source: run.ScoreSource, _traj
) -> dict:
    """Cached :func:`geoflow.overlays.path_metrics` (queued behind other heavy work)."""
    return _heavy(
        ("path metrics", spec, density_key, source_key),
        lambda: overlays.path_metrics(spec, _source.sde, _density, _traj),
        "W2 and free energy along the path ...",
    )


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
    return _heavy(
        ("frame agreement", spec, density_key, source_key, _jko is not None),
        lambda: overlays.frame_agreement(spec, _source.sde, _density, _traj, _jko),
        "W2 to the JKO path and to p_t at every frame ...",
    )


def quality_key(spec: run.RunSpec, density_key: str, source_key: str, diverged: bool) -> tuple:
    """The run-cache key of a run's final-quality numbers (the page and the prefetch share it)."""
    return ("final quality", spec, density_key, source_key, diverged)


def final_quality(
    spec: run.RunSpec,
    density_key: str,
    source_key: str,
    _density: Density,
    _final: np.ndarray,
    diverged: bool,
) -> dict:
    """Cached :func:`geoflow.overlays.final_quality` of a run's final samples.

    Exact W2 at n = 1000 costs about as much as the run itself, so it waits in the one-slot heavy
    queue: under load the numbers come a little later (the chart is already drawn), and a session
    that has moved on leaves the queue instead of computing numbers nobody will see.
    """
    return _heavy(
        quality_key(spec, density_key, source_key, diverged),
        lambda: overlays.final_quality(spec, _density, _final, diverged),
        None,
    )


def prefetch(
    specs: list[run.RunSpec],
    density_key: str,
    source_key: str,
    _density: Density | None,
    _source: run.ScoreSource,
) -> int:
    """Compute ``specs`` in the background while the server is idle (likely next views); returns how many.

    Each run gives way to interactive work at its next score evaluation (``serving.preemptible``);
    results land in the shared cache under the keys :func:`trajectory` looks up. A 2-D run's
    final-quality numbers (exact W2 at n = 1000, as long as the run itself) follow it, under the key
    :func:`final_quality` looks up, so a prefetched step change computes nothing after its chart
    either. That W2 is one POT call and cannot give way midway: an interactive change arriving
    during it waits for it (0.1-0.2 s), where without the prefetch its own run would compute it.
    """
    tasks: list[tuple[tuple, Any]] = []
    for spec in specs:
        try:
            spec.validate()
        except ValueError:
            continue
        src = serving.preemptible(_source, PREFETCH.busy)

        made: dict[str, run.Trajectory] = {}

        def compute(
            spec: run.RunSpec = spec, src: run.ScoreSource = src, made: dict = made
        ) -> run.Trajectory:
            c0 = time.perf_counter()
            made["traj"] = traj = run.run(spec, density=_density, source=src)
            log_timing(what="prefetch", ms=1000 * (time.perf_counter() - c0), steps=spec.steps)
            return traj

        tasks.append((("trajectory", spec, density_key, source_key), compute))
        if _density is None:  # an image run: its page measures quality otherwise
            continue

        def quality(spec: run.RunSpec = spec, made: dict = made) -> dict:
            traj = made.get("traj")
            if traj is None or traj.error:  # computed before (its numbers too) or diverged: leave it
                raise serving.Skipped
            return overlays.final_quality(spec, _density, traj.final, False)

        tasks.append((quality_key(spec, density_key, source_key, False), quality))
    return PREFETCH.submit(session_id(), tasks)


def step_neighbours(
    spec: run.RunSpec, last_steps: int | None, max_steps: int, toggled: run.RunSpec | None
) -> list:
    """The settings a user is likely to ask for next: the next step count in the direction of the last
    change, the other neighbour, the projection toggle, then two steps further in that direction."""
    down = last_steps is not None and last_steps > spec.steps
    near = [spec.steps - 1, spec.steps + 1] if down else [spec.steps + 1, spec.steps - 1]
    far = spec.steps - 2 if down else spec.steps + 2
    out = [replace(spec, steps=s) for s in near if 1 <= s <= max_steps]
    if toggled is not None:
        out.append(toggled)
    if 1 <= far <= max_steps:
        out.append(replace(spec, steps=far))
    return out


def prefetch_view(page: str, spec: run.RunSpec, toggled: run.RunSpec | None, max_steps: int = 200) -> int:
    """After a page is drawn: queue its neighbouring settings for the idle-time prefetch.

    Never fails the page: a spec that cannot run is simply not prefetched.
    """
    import sources

    last_key = f"_prefetch.{page}.steps"
    last = st.session_state.get(last_key)
    st.session_state[last_key] = spec.steps
    if not PREFETCH.enabled:
        return 0
    try:
        density = sources.resolve_density(spec.data) if not spec.is_image else None
        src = sources.score_source(spec)
        if ("trajectory", spec, sources.density_key(spec.data), src.key) not in RUNS:
            return 0  # the view itself did not run (an error is shown): guess nothing
        specs = step_neighbours(spec, last, max_steps, toggled)
        return prefetch(specs, sources.density_key(spec.data), src.key, density, src)
    except Exception:  # noqa: BLE001 - a guess must never break the page
        return 0


def clear() -> None:
    """Empty every cache of this module (tests)."""
    RUNS.clear()
    st.cache_data.clear()
