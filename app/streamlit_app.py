"""geoflow's app: st.navigation over one page per topic (design.md, "The app").

The page files live in ``app/views/``, not ``app/pages/``: Streamlit treats a ``pages/`` folder next to the
main script as a legacy multipage app until st.navigation first runs, so the first visitor after a start
would see a second, wrong page list.
"""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="geoflow", page_icon="🌀", layout="wide")

PAGES = [
    st.Page(HERE / "views" / "flows.py", title="Flows (2-D)", icon="🌀", default=True),
    st.Page(HERE / "views" / "projection.py", title="Projection", icon="🎯", url_path="projection"),
    st.Page(HERE / "views" / "images.py", title="Images", icon="🖼️", url_path="images"),
    st.Page(HERE / "views" / "train.py", title="Train your own", icon="✏️", url_path="train"),
    st.Page(HERE / "views" / "maths.py", title="The maths", icon="📐", url_path="maths"),
]

st.navigation(PAGES).run()
