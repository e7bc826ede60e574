"""Run history: the session's recent runs with their settings and metrics; a click restores one.

A run is recorded as a snapshot of every setting of its page (the ``"<page>.<name>"`` session keys)
with a short label (sampler, N, NFE, W2 / KL). Restoring writes the snapshot back into the session
before the widgets are drawn (a button callback), so the page reruns with exactly those settings.
"""

from __future__ import annotations

import copy
from typing import Any

import streamlit as st

MAX_RUNS = 8


def _runs(page: str) -> list[dict[str, Any]]:
    return st.session_state.setdefault(f"_history.{page}", [])


def snapshot(page: str) -> dict[str, Any]:
    """Every setting of a page, as stored in the session."""
    prefix = f"{page}."
    return {
        k: copy.deepcopy(v)
        for k, v in st.session_state.items()
        if isinstance(k, str) and k.startswith(prefix)
    }


def record(page: str, label: str, metrics: dict[str, Any]) -> None:
    """Put the current run first in the page's history (a run seen before moves up, not twice)."""
    snap = snapshot(page)
    runs = [r for r in _runs(page) if r["settings"] != snap]
    runs.insert(0, {"label": label, "settings": snap, "metrics": dict(metrics)})
    st.session_state[f"_history.{page}"] = runs[:MAX_RUNS]


def restore(settings: dict[str, Any]) -> None:
    """Write a snapshot back (a button callback: it runs before the widgets of the next run)."""
    for k, v in settings.items():
        st.session_state[k] = copy.deepcopy(v)


def panel(page: str, container: Any = None) -> None:
    """The list of recent runs; clicking one restores its settings (the current one is marked)."""
    c = container if container is not None else st.sidebar
    runs = _runs(page)
    if not runs:
        return
    with c.expander(f"recent runs ({len(runs)})", expanded=False):
        now = snapshot(page)
        for i, r in enumerate(runs):
            current = r["settings"] == now
            st.button(
                r["label"],
                key=f"_history.{page}.{i}",
                on_click=restore,
                args=(r["settings"],),
                disabled=current,
                help="the run shown now" if current else "restore these settings",
                width="stretch",
            )


def entries(page: str) -> list[dict[str, Any]]:
    """The recorded runs, most recent first (for tests and exports)."""
    return list(_runs(page))
