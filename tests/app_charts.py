"""The charts an AppTest page drew, whichever element drew them (shared by the app tests).

Most pages use ``st.plotly_chart`` (its figure is the element's ``spec``); the Flows page draws its
animation with the live chart component (``app/live_chart.py``), whose figure travels as the bytes
argument ``figure``, packed by ``geoflow.wire``. Both come back here as plotly figure dicts, plotly
charts first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from geoflow import wire

if str(Path(__file__).resolve().parents[1] / "app") not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

from live_chart import NAME as LIVE_CHART  # noqa: E402


def live_charts(at: AppTest) -> list:
    """The live chart elements of the page (their protos hold the figure bytes)."""
    return [c for c in at.get("component_instance") if c.proto.component_name.endswith(LIVE_CHART)]


def live_figure_bytes(element) -> bytes:
    """The figure bytes a live chart element carries."""
    (arg,) = [a for a in element.proto.special_args if a.key == "figure"]
    return arg.bytes


def chart_specs(at: AppTest) -> list[dict]:
    """Every chart's figure: the ``st.plotly_chart`` ones, then the live charts."""
    plain = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return plain + [wire.unpack_figure(live_figure_bytes(c)) for c in live_charts(at)]


def chart_count(at: AppTest) -> int:
    return len(at.get("plotly_chart")) + len(live_charts(at))
