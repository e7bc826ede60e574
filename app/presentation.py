"""The presentation view (``?present=1``): for a projector at the back of a room.

The sidebar and Streamlit's header are hidden by CSS (the settings still come from the URL), fonts
and markers are enlarged, and a page keeps only its chart, the chart's own play controls and a
short caption.
"""

from __future__ import annotations

import streamlit as st

FONT_SIZE = 24  # the chart's base font in the presentation view (16 otherwise)
MARKER_SIZE = 8.0  # particle markers (5 otherwise)
HEIGHT = 920  # the chart's height in px (760 otherwise)
_CSS = """
<style>
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
[data-testid="collapsedControl"], header[data-testid="stHeader"] { display: none !important; }
.block-container, [data-testid="stMainBlockContainer"] { padding-top: 0.5rem !important;
  max-width: 100% !important; }
[data-testid="stCaptionContainer"] { font-size: 1.5rem !important; }
</style>
"""


def presenting() -> bool:
    """Is the presentation flag in the URL?"""
    return str(st.query_params.get("present", "")).strip().lower() in ("1", "true", "yes", "on")


def apply() -> None:
    """Hide the sidebar and the header (call once per run, in the presentation view only)."""
    st.markdown(_CSS, unsafe_allow_html=True)


def figure_style() -> dict[str, float | int]:
    """Font and marker sizes for the animation builders: larger in the presentation view."""
    return {"font_size": FONT_SIZE, "marker_size": MARKER_SIZE, "height": HEIGHT} if presenting() else {}
