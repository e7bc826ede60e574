"""The Flows page's A/B comparison, presentation view and run history (AppTest, chart JSON inspected)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from app_charts import chart_specs
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app" / "streamlit_app.py")
pytestmark = pytest.mark.xdist_group("app")


def run_page(params: dict | None = None, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    for k, v in state.items():
        at.session_state[f"flows.{k}"] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def animated(at: AppTest) -> list[dict]:
    return [s for s in chart_specs(at) if "sliders" in s["layout"]]


def decode(arr: dict | list) -> np.ndarray:
    if isinstance(arr, dict):
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]).newbyteorder("<"))
    return np.asarray(arr)


def panels_at(spec: dict, frame: int) -> list[np.ndarray]:
    idx = [i for i, tr in enumerate(spec["data"]) if tr.get("name") == "particles"]
    fr = spec["frames"][frame]
    return [
        np.stack(
            [decode(fr["data"][fr["traces"].index(i)]["x"]), decode(fr["data"][fr["traces"].index(i)]["y"])],
            1,
        )
        for i in idx
    ]


def test_comparison_two_panels_one_slider_same_first_frame_in_the_url():
    at = run_page(
        steps=6, n=120, compare=True, b_sampler="ddim", b_steps=3, b_score="exact", overlays=["JKO path"]
    )
    (spec,) = animated(at)
    assert len(spec["layout"]["sliders"]) == 1  # one slider, one play button drive both panels
    a, b = panels_at(spec, 0)
    np.testing.assert_array_equal(a, b)  # identical first frames: the same data
    gen = [
        k for k, s in enumerate(spec["layout"]["sliders"][0]["steps"]) if s["label"].startswith("generation")
    ]
    a, b = panels_at(spec, gen[0])
    np.testing.assert_array_equal(a, b)  # the same x_T
    assert all(len(fr["data"]) == len(fr["traces"]) for fr in spec["frames"])
    names = [tr.get("name", "") for tr in spec["data"]]
    assert sum(n.startswith("JKO path") for n in names) == 2  # the overlay in both panels
    text = " ".join(a["text"] for a in spec["layout"]["annotations"])
    assert "A: Euler-Maruyama" in text and "B: DDIM" in text
    metrics = [m.label for m in at.metric]
    assert "A: NFE" in metrics and "B: NFE" in metrics and "B: W2 to data" in metrics
    for k, v in (("compare", "True"), ("b_sampler", "ddim"), ("b_steps", "3")):
        assert at.query_params[k] in ([v], v), k


def test_comparison_from_a_link_and_projection_strength_for_b():
    at = run_page(
        params={
            "compare": "1",
            "b_steps": "4",
            "b_project": "true",
            "b_strength": "0.0",
            "steps": "4",
            "n": "80",
        }
    )
    (spec,) = animated(at)
    a, b = panels_at(spec, len(spec["frames"]) - 1)
    np.testing.assert_allclose(a, b, atol=1e-5)  # strength 0: predict-project is Euler-Maruyama
    assert "Predict-project" in " ".join(x["text"] for x in spec["layout"]["annotations"])


def test_presentation_flag_hides_the_controls_and_enlarges():
    at = run_page(params={"present": "1", "steps": "4", "n": "80"})
    css = " ".join(m.value for m in at.markdown)
    assert 'section[data-testid="stSidebar"]' in css and "display: none" in css
    (spec,) = animated(at)
    assert spec["layout"]["font"]["size"] == 24
    particles = next(tr for tr in spec["data"] if tr.get("name") == "particles")
    assert particles["marker"]["size"] == 8
    assert not at.metric and not at.title  # only the chart, its play controls and a short caption
    assert len(at.caption) == 1


def test_run_history_records_and_restores():
    at = run_page(steps=5, n=80)
    at.session_state["flows.steps"] = 7
    at.run()
    at.session_state["flows.sampler"] = "ddim"
    at.run()
    assert not at.exception
    labels = [b.label for b in at.sidebar.button]
    runs = [lab for lab in labels if "N=" in lab]
    assert len(runs) == 3 and runs[0].startswith("DDIM") and "W2" in runs[0]
    old = next(b for b in at.sidebar.button if b.label.startswith("Euler-Maruyama") and "N=5," in b.label)
    old.click().run()
    assert not at.exception
    assert at.session_state["flows.steps"] == 5 and at.session_state["flows.sampler"] == "euler_maruyama"
    (spec,) = animated(at)
    assert "N=5," in spec["layout"]["title"]["text"]


def test_small_multiples_and_jko_alone():
    at = run_page(steps=4, n=100, view="small multiples: particles | JKO path | exact p_t")
    (spec,) = animated(at)
    assert "xaxis3" in spec["layout"] and spec["layout"]["xaxis3"]["matches"] == "x"
    axes = {tr.get("name", "")[:8]: tr.get("xaxis") for tr in spec["data"]}
    assert axes["particle"] == "x" and axes["JKO path"] == "x2" and axes["exact p_"] == "x3"
    assert len(spec["layout"]["sliders"]) == 1
    at = run_page(steps=4, n=100, overlays=["JKO path"], jko_alone=True)
    (spec,) = animated(at)
    names = [tr.get("name", "") for tr in spec["data"]]
    assert "particles" not in names and any(n.startswith("JKO path") for n in names)


def test_projection_page_opens_its_comparison_on_the_flows_page():
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["projection.steps"] = 4
    at.session_state["projection.n"] = 80
    at.switch_page("views/projection.py")
    at.run()
    at.sidebar.selectbox(key="projection.sampler").set_value("predict_project_langevin").run()
    at.button(key="to_flows").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["flows.compare"] is True
    assert at.session_state["flows.b_sampler"] == "predict_project_langevin"
    (spec,) = animated(at)
    text = " ".join(a["text"] for a in spec["layout"]["annotations"])
    assert "A: Euler-Maruyama" in text and "B: " in text
    a, b = panels_at(spec, 0)
    np.testing.assert_array_equal(a, b)
