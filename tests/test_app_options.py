"""Every option each page offers runs: a chart, no error box, no exception (AppTest).

The option lists are read from the page's own widgets (``options`` of each selectbox), so an option
added to a page is walked here without editing this file. Small N and particle counts keep it fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from app_charts import chart_count, chart_specs
from streamlit.testing.v1 import AppTest  # noqa: E402

from geoflow.checkpoints import read_manifest  # noqa: E402
from geoflow.registry import SAMPLERS, get_sampler  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app" / "streamlit_app.py")
pytestmark = pytest.mark.xdist_group("app")


def page(name: str | None, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for k, v in state.items():
        at.session_state[k] = v
    if name is not None:
        at.switch_page(f"views/{name}.py")
    at.run()
    return at


def options(at: AppTest, key: str) -> list[str]:
    """The choices a selectbox offers (by its session-state key), as values (labels mapped back)."""
    by_label = {info.label: name for name, info in SAMPLERS.items()}
    return [by_label.get(o, o) for o in at.sidebar.selectbox(key=key).options]


def assert_drawn(at: AppTest, what: str, min_charts: int = 1) -> None:
    assert not at.exception, (what, [e.value for e in at.exception])
    assert not at.error, (what, [e.value for e in at.error])
    assert chart_count(at) >= min_charts, what


def titles(at: AppTest) -> list[str]:
    out = []
    for spec in chart_specs(at):
        out.append(spec["layout"].get("title", {}).get("text", ""))
    return out


def test_flows_every_sampler_and_every_projection_T():
    at = page(None, **{"flows.steps": 3, "flows.n": 50})
    samplers = options(at, "flows.sampler")
    assert "euler_maruyama" in samplers and len(samplers) >= 8
    for name in samplers:
        sde = "ve" if "vp" not in get_sampler(name).sdes else "vp"
        at.session_state["flows.sampler"] = name
        at.session_state["flows.sde"] = sde
        at.session_state["flows.score"] = "exact"
        at.run()
        assert_drawn(at, name)
        assert get_sampler(name).label in titles(at)[0]
    at.session_state["flows.sde"] = "vp"
    at.session_state["flows.score"] = "auto"
    at.session_state["flows.sampler"] = "euler_maruyama"
    at.session_state["flows.project"] = True
    for kind in options(at, "flows.projection"):
        at.session_state["flows.projection"] = kind
        at.run()
        assert_drawn(at, f"projection T {kind}")
        assert "Predict-project" in titles(at)[0], kind


def test_flows_every_spacing_score_colouring_and_overlay():
    at = page(None, **{"flows.steps": 3, "flows.n": 50, "flows.density": "eight_gaussians"})
    for spacing in options(at, "flows.spacing"):
        at.session_state["flows.spacing"] = spacing
        at.run()
        assert_drawn(at, spacing)
    for score in ("auto", "exact", "pretrained"):
        at.session_state["flows.score"] = score
        at.run()
        assert_drawn(at, score)
    at.session_state["flows.score"] = "session"
    at.run()  # no model trained in this session: a message naming what is available
    assert not at.exception and any("available" in e.value for e in at.error)
    at.session_state["flows.score"] = "auto"
    for colour in at.sidebar.radio(key="flows.color_by").options:
        at.session_state["flows.color_by"] = colour
        at.run()
        assert_drawn(at, colour)
    overlays = list(at.sidebar.multiselect(key="flows.overlays").options)
    assert len(overlays) == 6
    for ov in overlays:
        at.session_state["flows.overlays"] = [ov]
        at.run()
        assert_drawn(at, ov)
        spec = chart_specs(at)[0]
        assert len(spec["data"]) >= 2, ov  # the overlay's trace beside the particles


def test_projection_page_every_variant_with_every_T_and_its_default_strength():
    at = page("projection", **{"projection.steps": 4, "projection.n": 60})
    variants = options(at, "projection.sampler")
    assert "predict_project_langevin" in variants and len(variants) >= 4
    kinds = options(at, "projection.projection")
    for name in variants:
        at.sidebar.selectbox(key="projection.sampler").set_value(name).run()
        info = get_sampler(name)
        # choosing a variant sets its own registry default strength
        assert at.session_state["projection.strength"] == pytest.approx(info.default_strength), name
        for kind in kinds:
            at.session_state["projection.projection"] = kind
            at.run()
            assert_drawn(at, f"{name} / {kind}", min_charts=2)
            assert any(info.label in t for t in titles(at)), (name, titles(at))


@pytest.mark.skipif("digits-vp" not in read_manifest(), reason="no shipped digits model")
def test_images_page_every_sampler_and_every_T():
    for data in ("digits", "shapes"):
        at = page("images", **{"images.steps": 3, "images.n": 16, "images.data": data})
        samplers = options(at, "images.sampler")
        assert "predict_project_langevin" in samplers and "annealed_langevin" not in samplers
        kinds = options(at, "images.projection")
        for name in samplers:
            at.session_state["images.sampler"] = name
            for kind in kinds if get_sampler(name).takes_projection else kinds[:1]:
                at.session_state["images.projection"] = kind
                at.run()
                assert not at.exception, (data, name, kind, [e.value for e in at.exception])
                assert not at.error, (data, name, kind, [e.value for e in at.error])
                assert len(at.get("image")) >= 2, (data, name, kind)
                assert any(get_sampler(name).label in c.value for c in at.caption), (data, name)
