"""geoflow's app: st.navigation over one page per topic (design.md, "The app").

The page files live in ``app/views/``, not ``app/pages/``: Streamlit treats a ``pages/`` folder next to the
main script as a legacy multipage app until st.navigation first runs, so the first visitor after a start
would see a second, wrong page list. Icons are Streamlit's Material symbols (a font Streamlit serves),
not emoji: many lab machines and headless browsers have no emoji font.
"""

import sys
import time
from pathlib import Path

T_START = time.perf_counter()

import streamlit as st  # noqa: E402
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException  # noqa: E402

HERE = Path(__file__).resolve().parent
for _p in (str(HERE), str(HERE.parent)):  # the app's modules; geoflow from a checkout without pip install
    if _p not in sys.path:
        sys.path.insert(0, _p)

import cache  # noqa: E402
import serving  # noqa: E402
import state  # noqa: E402

st.set_page_config(page_title="geoflow", page_icon=":material/cyclone:", layout="wide")

PAGES = [
    st.Page(HERE / "views" / "flows.py", title="Flows (2-D)", icon=":material/cyclone:", default=True),
    st.Page(
        HERE / "views" / "projection.py", title="Projection", icon=":material/target:", url_path="projection"
    ),
    st.Page(HERE / "views" / "images.py", title="Images", icon=":material/image:", url_path="images"),
    st.Page(HERE / "views" / "train.py", title="Train your own", icon=":material/edit:", url_path="train"),
    st.Page(HERE / "views" / "maths.py", title="The maths", icon=":material/functions:", url_path="maths"),
]

serving.set_server_threads()  # once per process, not per call
pg = st.navigation(PAGES)
t0 = time.perf_counter()
cache.log_timing(what="page start", page=pg.title, since_script_start_ms=1000 * (t0 - T_START))
try:
    with cache.PAGE_RUNS.slot():  # the idle-time prefetch gives way while any page runs
        pg.run()
except ScriptControlException:  # st.rerun / st.switch_page / st.stop: Streamlit's own control flow
    raise
except Exception as e:  # noqa: BLE001 - the page boundary: a readable message, never a traceback
    state.page_failed(pg.title, e)
finally:
    cache.log_timing(what="script", page=pg.title, ms=1000 * (time.perf_counter() - t0))
    # once per process, after the first page is on screen (it costs about 2 s of imports): from then
    # on Streamlit's full GC after each rerun skips the imported modules' objects; the first page's
    # cached figures (reference cycles) are dropped first, so that none of them is frozen for good
    serving.freeze_startup_heap(release=cache.drop_figures)
