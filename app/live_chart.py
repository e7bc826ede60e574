"""The live chart: an animated figure drawn in one persistent plotly div, updated in place.

``st.plotly_chart`` gives a chart a new element id whenever its figure changes, so every rerun
mounts a new chart (plotly's ``newPlot``), and its frontend copies the figure's JSON through
``JSON.stringify`` / ``replaceAll`` / ``JSON.parse`` several times; for a 3 MB animation that was
most of the redraw (benchmarks/RESULTS.md, "app"). This component (``app/live_plot/index.html``)
keeps one iframe per key: the figure arrives as raw bytes packed by :mod:`geoflow.wire` (its arrays
in one binary body, particle positions as int16: a third of the JSON's size), is decoded once and
handed to ``Plotly.react`` on the same div, so a zoom survives (``uirevision``, kept in the tab's
sessionStorage if the frame is remounted). The figure's frame slider is drawn by
the page as an HTML range input (plotly's own slider lays out its ~200 labelled steps on every
redraw); Play / Pause remain plotly's buttons. plotly.js is the plotly Python package's own file,
copied next to the page once per process: nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import plotly
import streamlit.components.v1 as components

from geoflow import wire

HERE = Path(__file__).resolve().parent
PAGE = HERE / "live_plot" / "index.html"
NAME = "geoflow_live_plot"


def plotly_js() -> Path:
    """The plotly.min.js that ships inside the plotly Python package."""
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.js not found at {path}; reinstall the plotly package")
    return path


@lru_cache(maxsize=1)
def served_dir() -> Path:
    """A folder holding the page and plotly.js, named by their content (made once per process)."""
    page = PAGE.read_bytes()
    js = plotly_js()
    tag = hashlib.sha256(page + plotly.__version__.encode()).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"geoflow-live-plot-{tag}"
    if not (out / "index.html").is_file():
        tmp = Path(tempfile.mkdtemp(prefix="geoflow-live-plot-", dir=tempfile.gettempdir()))
        shutil.copyfile(js, tmp / "plotly.min.js")
        (tmp / "index.html").write_bytes(page)
        try:
            tmp.rename(out)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


@lru_cache(maxsize=1)
def _component() -> Any:
    return components.declare_component(NAME, path=str(served_dir()))


def figure_bytes(fig: Any) -> tuple[bytes, str]:
    """The figure packed for the browser (:func:`geoflow.wire.pack_figure`) and its content hash.

    Kept on the figure after the first call: a figure from ``app/cache.figure`` is shared by every
    session and never changed, so its bytes are made once for all of them.
    """
    cached = getattr(fig, "_geoflow_bytes", None)
    if cached is None:
        raw = getattr(fig, "raw", None)
        if raw is None:  # any other plotly figure: its JSON (typed arrays for numpy arrays) first
            import plotly.io as pio

            raw = json.loads(pio.to_json(fig, validate=False))
        data = wire.pack_figure(raw)
        cached = (data, hashlib.blake2b(data, digest_size=12).hexdigest())
        fig._geoflow_bytes = cached
    return cached


def live_chart(fig: Any, key: str, config: dict | None = None) -> None:
    """Draw ``fig`` (an ``AnimatedFigure`` or any plotly figure) in the live chart named ``key``.

    The chart's identity is ``key``: a rerun with another figure updates the same plot. The figure's
    content hash travels along, so a rerun that draws the same figure again costs the browser nothing.
    """
    data, digest = figure_bytes(fig)
    raw = getattr(fig, "raw", None)
    height = (raw["layout"] if raw is not None else fig.to_dict()["layout"]).get("height") or 450
    # ``height`` is the frame's height until the page reports its own (no jump on the first draw)
    _component()(figure=data, key=key, default=None, config=config or {}, fig_key=digest, height=int(height))
