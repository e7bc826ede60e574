"""geoflow's app: st.navigation over one page per topic (design.md, "The app").

The page files live in ``app/views/``, not ``app/pages/``: Streamlit treats a ``pages/`` folder next to the
main script as a legacy multipage app until st.navigation first runs, so the first visitor after a start
would see a second, wrong page list. Icons are Streamlit's Material symbols (a font Streamlit serves),
not emoji: many lab machines and headless browsers have no emoji font.
"""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

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

st.navigation(PAGES).run()
