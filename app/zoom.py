"""Zoom that survives settings changes which keep the axes.

Every figure carries a ``uirevision`` that stays constant while its axes stay (same data, SDE and
layout). plotly.js keeps a user's zoom across ``Plotly.react`` calls with the same ``uirevision``,
but Streamlit gives a chart a new element id whenever its figure changes, so the chart is mounted
afresh and plotly's own memory is lost. :func:`keep_zoom` adds a small script to the page itself
(``st.html`` with its JavaScript allowed; ``components.html`` is deprecated) that remembers the
user's axis ranges per ``uirevision`` in the browser tab, and applies them to the next chart with
the same ``uirevision``: the zoom outlives the rerun, and a double-click (autorange) forgets it.
Play and the slider never touch the ranges.
"""

from __future__ import annotations

import streamlit as st

_SCRIPT = r"""
<script>
(function () {
  const w = window; // st.html runs this in the app's own page
  if (!w || w.__geoflowZoom) return;
  const store = (w.__geoflowZoom = {});
  const RANGE = /^[xy]axis[0-9]*\.range(\[[01]\])?$/;
  const AUTO = /^[xy]axis[0-9]*\.autorange$/;
  function differs(gd, zoom) {
    const fl = gd._fullLayout || {};
    return Object.keys(zoom).some(function (k) {
      const m = k.match(/^([xy]axis[0-9]*)\.range(?:\[([01])\])?$/);
      if (!m || !fl[m[1]] || !fl[m[1]].range) return false;
      const now = fl[m[1]].range;
      const want = zoom[k];
      return m[2] === undefined
        ? Math.abs(now[0] - want[0]) + Math.abs(now[1] - want[1]) > 1e-9
        : Math.abs(now[Number(m[2])] - want) > 1e-9;
    });
  }
  function restore(gd) {
    const rev = String((gd.layout && gd.layout.uirevision) || "");
    const zoom = rev && store[rev];
    if (zoom && w.Plotly && differs(gd, zoom)) w.Plotly.relayout(gd, Object.assign({}, zoom));
  }
  function remember(gd) {
    // a zoom made before this script was loaded: plotly lists the edited axes in _preGUI
    const rev = String((gd.layout && gd.layout.uirevision) || "");
    const pre = (gd._fullLayout && gd._fullLayout._preGUI) || {};
    const fl = gd._fullLayout || {};
    for (const k of Object.keys(pre)) {
      const m = k.match(/^([xy]axis[0-9]*)\.range/);
      if (rev && m && fl[m[1]] && fl[m[1]].range) {
        store[rev] = Object.assign(store[rev] || {}, { [m[1] + ".range"]: fl[m[1]].range.slice() });
      }
    }
  }
  function hook(gd) {
    if (gd.__geoflowZoomHooked || !gd.on || !gd.layout) return;
    gd.__geoflowZoomHooked = true;
    remember(gd);
    restore(gd);
    // Streamlit may redraw the new chart once more (Plotly.react with its own ranges): restore after it
    gd.on("plotly_afterplot", function () { restore(gd); });
    gd.on("plotly_relayout", function (ev) {
      const r = String((gd.layout && gd.layout.uirevision) || "");
      if (!r || !ev) return;
      const keys = Object.keys(ev);
      if (keys.some((k) => AUTO.test(k) && ev[k])) { delete store[r]; return; }
      const zoom = {};
      for (const k of keys) if (RANGE.test(k)) zoom[k] = ev[k];
      if (Object.keys(zoom).length) store[r] = Object.assign(store[r] || {}, zoom);
    });
  }
  function scan() { w.document.querySelectorAll(".js-plotly-plot").forEach(hook); }
  new w.MutationObserver(scan).observe(w.document.body, { childList: true, subtree: true });
  w.setInterval(scan, 500);
  scan();
})();
</script>
"""


def keep_zoom() -> None:
    """Install (once per browser tab) the zoom keeper; costs one empty element per page run."""
    st.html(_SCRIPT, unsafe_allow_javascript=True)
