"""geoflow's app: st.navigation over one page per topic (design.md, "The app")."""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="geoflow", page_icon="🌀", layout="wide")

PAGES = [
    st.Page(HERE / "pages" / "flows.py", title="Flows (2-D)", icon="🌀", url_path="flows", default=True),
    st.Page(HERE / "pages" / "projection.py", title="Projection", icon="🎯", url_path="projection"),
    st.Page(HERE / "pages" / "images.py", title="Images", icon="🖼️", url_path="images"),
    st.Page(HERE / "pages" / "train.py", title="Train your own", icon="✏️", url_path="train"),
    st.Page(HERE / "pages" / "maths.py", title="The maths", icon="📐", url_path="maths"),
]

st.navigation(PAGES).run()
