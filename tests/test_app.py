"""App tests with streamlit's AppTest: every page loads, one interaction each is checked from the chart JSON.

Also the figure builders and exports of ``geoflow.figures`` (frame count, float32 typed arrays, GIF/MP4
bytes) and the app's bad-input paths (uploads, drawings, URL settings, diverging samplers).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")
from app_charts import chart_specs
from streamlit.testing.v1 import AppTest  # noqa: E402

from geoflow import export, figures  # noqa: E402
from geoflow.checkpoints import read_manifest  # noqa: E402
from geoflow.overlays import arrow_segments  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app" / "streamlit_app.py")
TIMEOUT = 120
pytestmark = pytest.mark.xdist_group("app")  # one worker runs them: AppTest shares streamlit's caches


def run_page(page: str | None = None, params: dict | None = None, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    for k, v in state.items():
        at.session_state[k] = v
    if page is not None:
        at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def flows(**settings) -> dict:
    """Flows-page settings as session-state keys (``flows.<name>``)."""
    return {f"flows.{k}": v for k, v in settings.items()}


def specs(at: AppTest) -> list[dict]:
    return chart_specs(at)


def frame_labels(spec: dict) -> list[str]:
    return [s["label"] for s in spec["layout"]["sliders"][0]["steps"]]


def decode(arr: dict | list) -> np.ndarray:
    """A plotly typed array (base64 float32) or a plain list as numpy."""
    if isinstance(arr, dict):
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]).newbyteorder("<"))
    return np.asarray(arr, dtype=np.float64)


def particles_at(spec: dict, frame: int) -> np.ndarray:
    fr = spec["frames"][frame]
    tr = fr["data"][-1]  # particles are the last trace
    assert tr["x"]["dtype"] == "f4"  # float32 into plotly (design.md)
    return np.stack([decode(tr["x"]), decode(tr["y"])], 1)


# --------------------------------------------------------------------------- figures (library)
def test_particle_animation_frames_and_float32():
    rng = np.random.default_rng(0)
    paths = rng.normal(size=(7, 50, 2)).astype(np.float32)
    layer = figures.Layer("x0", "markers", xy=paths[:, :10])
    fig = figures.particle_animation(paths, [f"f{i}" for i in range(7)], layers=[layer], start_frame=3)
    d = fig.to_dict()
    assert len(d["frames"]) == 7
    assert [s["label"] for s in d["layout"]["sliders"][0]["steps"]] == [f"f{i}" for i in range(7)]
    assert d["layout"]["sliders"][0]["active"] == 3
    last = d["frames"][6]["data"][-1]
    assert last["x"]["dtype"] == "f4"
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(last["x"]["bdata"]), "<f4"), paths[6, :, 0])
    assert d["layout"]["uirevision"] == "geoflow"
    assert d["layout"]["xaxis"]["range"] == d["layout"]["yaxis"]["range"]
    with pytest.raises(ValueError, match="one label per frame"):
        figures.particle_animation(paths, ["a"])
    with pytest.raises(ValueError, match="frames"):
        figures.particle_animation(
            paths, [str(i) for i in range(7)], layers=[figures.Layer("bad", "markers", xy=paths[:3])]
        )


def test_still_figure_shows_the_frame():
    paths = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    fig = figures.particle_animation(paths, ["a", "b", "c"])
    still = figures.still_figure(fig, 2)
    assert not still.frames and not still.layout.sliders
    np.testing.assert_array_equal(np.asarray(still.data[-1].x, dtype=np.float32), paths[2, :, 0])


def test_position_colors_and_arrows():
    pts = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.01]])
    c = figures.position_colors(pts)
    assert len(c) == 3 and all(len(x) == 7 and x.startswith("#") for x in c)
    assert c[0] != c[1]
    seg = arrow_segments(np.zeros((2, 2)), np.array([[1.0, 0.0], [0.0, 2.0]]))
    assert seg.shape == (14, 2) and seg.dtype == np.float32
    np.testing.assert_allclose(seg[1], [1.0, 0.0])
    np.testing.assert_allclose(seg[8], [0.0, 2.0])
    assert np.isnan(seg[2]).all() and np.isnan(seg[6]).all()


def test_gif_mp4_csv_exports():
    # the encoders (frames rendered from the figure itself are checked in tests/test_animation.py)
    rng = np.random.default_rng(1)
    paths = rng.normal(size=(4, 30, 2)).astype(np.float32)
    imgs = [rng.integers(0, 255, size=(96, 96, 3), dtype=np.uint8) for _ in range(4)]
    gif = export.gif_bytes(imgs)
    assert gif[:6] in (b"GIF87a", b"GIF89a")
    mp4 = export.mp4_bytes(imgs)
    assert mp4[4:8] == b"ftyp"
    csv = export.paths_csv(paths, np.linspace(0, 1, 4), ["noising"] * 4).decode().splitlines()
    assert csv[0] == "frame,phase,t,particle,x,y" and len(csv) == 1 + 4 * 30


def test_static_export_without_chromium_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(export, "find_chromium", lambda: None)
    fig = figures.particle_animation(np.zeros((2, 3, 2), np.float32), ["a", "b"])
    with pytest.raises(export.ExportUnavailable, match="Chromium"):
        export.static_image(figures.still_figure(fig, 0), "png")


# --------------------------------------------------------------------------- Flows
def test_flows_frames_follow_steps_and_projection_keeps_the_noise():
    at = run_page(None, **flows(steps=12, n=200))
    (spec,) = [s for s in specs(at) if "sliders" in s["layout"]]
    labels = frame_labels(spec)
    assert sum(lab.startswith("generation") for lab in labels) == 12 + 1
    assert len(spec["frames"]) == len(labels)
    assert particles_at(spec, 0).shape == (200, 2)
    x_T = particles_at(spec, labels.index(next(lab for lab in labels if lab.startswith("generation"))))

    at.sidebar.slider(key="flows.steps").set_value(7).run()
    assert not at.exception
    (spec,) = [s for s in specs(at) if "sliders" in s["layout"]]
    labels = frame_labels(spec)
    assert sum(lab.startswith("generation") for lab in labels) == 7 + 1
    assert "Euler-Maruyama" in spec["layout"]["title"]["text"]

    at.sidebar.toggle(key="flows.project").set_value(True).run()
    assert not at.exception
    (spec,) = [s for s in specs(at) if "sliders" in s["layout"]]
    assert "Predict-project" in spec["layout"]["title"]["text"]
    assert "NFE=13" in spec["layout"]["title"]["text"]  # 2 per step, 1 for the final denoising step
    labels = frame_labels(spec)
    first_gen = labels.index(next(lab for lab in labels if lab.startswith("generation")))
    # the same initial noise x_T whatever the sampler and step count
    np.testing.assert_array_equal(particles_at(spec, first_gen), x_T)
    assert at.query_params["project"] in (["True"], "True")


def test_flows_overlay_adds_its_trace():
    at = run_page(None, **flows(steps=5, n=100, overlays=["x0_hat", "velocity field"]))
    (spec,) = [s for s in specs(at) if "sliders" in s["layout"]]
    names = [d.get("name") for d in spec["data"]]
    assert "x0_hat (denoised estimate)" in names and "velocity field" in names
    assert names[-1] == "particles"
    assert len(spec["frames"][0]["data"]) == len(names)


def test_flows_bad_url_falls_back_and_vp_only_pretrained_is_explained():
    at = run_page(None, params={"steps": "abc", "density": "nope", "n": "99999"})
    assert at.session_state["flows.steps"] == 50 and at.session_state["flows.density"] == "eight_gaussians"
    assert at.session_state["flows.n"] == 1000  # out of range: the default, with a notice
    notices = " ".join(w.value for w in at.warning)
    assert "steps='abc'" in notices and "density='nope'" in notices and "n='99999'" in notices
    at.sidebar.selectbox(key="flows.density").set_value("two_moons")
    at.sidebar.radio(key="flows.sde").set_value("ve").run()
    assert not at.exception
    msgs = " ".join(e.value for e in at.error)
    if "two_moons-vp" not in read_manifest():
        assert "no" in msgs and "score" in msgs
    else:
        assert "VP only" in msgs


def test_flows_diverging_sampler_is_a_message_not_a_traceback():
    at = run_page(
        None,
        **flows(steps=3, n=100, project=True, strength=1000.0, final_denoise=False),
    )
    errors = " ".join(e.value for e in at.error)
    assert "diverged" in errors
    assert chart_specs(at)  # the frames it reached are still drawn


def test_flows_absurd_combinations_never_raise():
    """Every sampler on both SDEs at N = 1 and 2, odd spacings, projection on: messages, never a traceback."""
    from geoflow.registry import STANDARD_SAMPLERS

    at = run_page(None, **flows(steps=1, n=50))
    for sde, spacing in (("vp", "logsnr"), ("ve", "quadratic")):
        for name in STANDARD_SAMPLERS:
            for steps in (1, 2):
                at.session_state["flows.sde"] = sde
                at.session_state["flows.sampler"] = name
                at.session_state["flows.steps"] = steps
                at.session_state["flows.spacing"] = spacing
                at.session_state["flows.project"] = steps == 2
                at.run()
                assert not at.exception, (sde, spacing, name, steps, [e.value for e in at.exception])
                assert chart_specs(at) or at.error


def test_flows_curves_w2_and_free_energy_in_the_figure():
    at = run_page(None, **flows(steps=4, n=120, curves=True))
    assert not at.error, [e.value for e in at.error]
    (spec,) = [s for s in specs(at) if "sliders" in s["layout"]]
    charts = [tr for tr in spec["data"] if tr.get("xaxis") in ("x2", "x3")]
    w2 = [tr for tr in charts if tr["xaxis"] == "x2" and tr.get("mode") == "lines"]
    fe = [tr for tr in charts if tr["xaxis"] == "x3" and tr.get("mode") == "lines"]
    ys = np.concatenate([decode(tr["y"]) for tr in w2 if "to p_t" in tr["name"]])
    assert ys.size >= 4 and np.all(np.isfinite(ys)) and np.all(ys >= 0)
    assert any(tr["name"] == "floor" for tr in w2)
    exact = next(tr for tr in fe if tr["name"] == "exact")  # eight_gaussians is a mixture: exact free energy
    t, v = decode(exact["x"]), decode(exact["y"])
    assert np.all(np.diff(v[np.argsort(t)]) <= 1e-6)  # Theorem 1: KL(mu_t || pi) decreases along the flow
    # the cursors are moved by the frames (the slider), not by the server
    cursors = [
        i for i, tr in enumerate(spec["data"]) if tr.get("xaxis") in ("x2", "x3") and tr["mode"] == "markers"
    ]
    assert cursors and all(set(cursors) <= set(fr["traces"]) for fr in spec["frames"])


@pytest.mark.skipif(export.find_chromium() is None, reason="GIF frames are rendered by kaleido (Chromium)")
def test_flows_gif_export_from_memory():
    at = run_page(None, **flows(steps=3, n=50))
    at.button(key="geoflow_flow_gif_make").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["exports"]["geoflow_flow_gif"][:6] in (b"GIF87a", b"GIF89a")
    labels = [b.proto.label for b in at.get("download_button")]
    assert "download GIF" in labels and "CSV of positions" in labels


# --------------------------------------------------------------------------- Projection
def panel_particles(spec: dict, frame: int) -> list[np.ndarray]:
    """The particles of every panel of a figure at one frame (traces named "particles", in order)."""
    idx = [i for i, tr in enumerate(spec["data"]) if tr.get("name") == "particles"]
    fr = spec["frames"][frame]
    out = []
    for i in idx:
        tr = fr["data"][fr["traces"].index(i)]
        out.append(np.stack([decode(tr["x"]), decode(tr["y"])], 1))
    return out


def test_projection_side_by_side_same_noise_and_zero_strength_matches_em():
    at = run_page("projection", **{"projection.steps": 8, "projection.n": 200, "projection.strength": 0.0})
    anims = [s for s in specs(at) if "sliders" in s["layout"]]
    assert len(anims) >= 2  # EM | predict-project in one figure, single-step
    ab, single = anims[0], anims[1]
    title = ab["layout"]["title"]["text"]
    assert "Euler-Maruyama" in title and "Predict-project" in title
    em0, pp0 = panel_particles(ab, 0)
    np.testing.assert_array_equal(em0, pp0)  # the same x_T
    # dmu = 0: predict-project is Euler-Maruyama step for step (method.md section 3)
    em1, pp1 = panel_particles(ab, -1)
    np.testing.assert_allclose(em1, pp1, atol=1e-5)
    # single-step mode: x_T, then predict / project / diffuse per step (the last step is the final denoise)
    labels = frame_labels(single)
    assert labels[1].endswith("predict") and labels[2].endswith("project") and "diffuse" in labels[3]
    assert len(labels) == 1 + 3 * 7

    at.sidebar.number_input(key="projection.strength").set_value(2.0).run()
    assert not at.exception
    ab2 = [s for s in specs(at) if "sliders" in s["layout"]][0]
    assert not np.allclose(panel_particles(ab2, -1)[1], pp1)


# --------------------------------------------------------------------------- Images
def test_images_page():
    shipped = "digits-vp" in read_manifest()
    at = run_page("images", **{"images.steps": 3, "images.n": 16})
    if not shipped:
        assert any("digits-vp" in e.value for e in at.error)
        return
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("image")) >= 4
    (pca,) = [s for s in specs(at) if "principal" in json.dumps(s["layout"])]
    n_frames = len(decode(pca["data"][1]["x"]))
    assert n_frames == 3 + 1  # x_T and one state per step
    at.sidebar.slider(key="images.steps").set_value(5).run()
    (pca,) = [s for s in specs(at) if "principal" in json.dumps(s["layout"])]
    assert len(decode(pca["data"][1]["x"])) == 5 + 1


def test_images_page_mechanics_with_an_untrained_network(monkeypatch):
    """Grid, x_t / x0_hat strip and PCA path from any score network (random weights here, tiny cost)."""
    import streamlit as st

    from geoflow import run as run_api
    from geoflow.sde import VPSDE
    from geoflow.train import make_image_score_model

    model = make_image_score_model("digits", VPSDE()).eval()
    monkeypatch.setattr(run_api, "pretrained_available", lambda name: name == "digits-vp")
    monkeypatch.setattr(run_api, "pretrained_pair", lambda name: (model, None))
    st.cache_data.clear()
    try:
        at = run_page("images", **{"images.steps": 3, "images.n": 16, "images.data": "digits"})
        assert not at.error, [e.value for e in at.error]
        assert len(at.get("image")) >= 4  # the sample grid and three x_t / x0_hat strips
        (pca,) = [s for s in specs(at) if "principal" in json.dumps(s["layout"])]
        assert len(decode(pca["data"][1]["x"])) == 3 + 1  # x_T and one state per step
        at.sidebar.slider(key="images.steps").set_value(5).run()
        assert not at.exception and not at.error
        (pca,) = [s for s in specs(at) if "principal" in json.dumps(s["layout"])]
        assert len(decode(pca["data"][1]["x"])) == 5 + 1
        assert any("NFE = 5" in c.value for c in at.caption)
    finally:
        st.cache_data.clear()


# --------------------------------------------------------------------------- Train your own
def test_upload_creates_a_density_and_bad_uploads_are_messages():
    at = run_page("train")
    at.sidebar.radio(key="data_source").set_value("upload CSV").run()
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(40, 2))
    good = "x,y\n" + "\n".join(f"{a:.4f},{b:.4f}" for a, b in pts)
    at.get("file_uploader")[0].set_value(("pts.csv", good.encode(), "text/csv")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (prev,) = [s for s in specs(at) if "40 points" in s["layout"]["title"]["text"]]
    np.testing.assert_allclose(decode(prev["data"][0]["x"]), pts[:, 0], atol=1e-4)
    assert "my_data" in at.session_state["user_densities"]
    for name, body, what in (
        ("cols.csv", b"1,2,3\n4,5,6\n", "2 columns"),
        ("nan.csv", b"x,y\n" + b"1,2\n" * 20 + b"nan,1\n", "NaN"),
        ("text.csv", b"x,y\n1,2\nhello,3\n", "non-numeric"),
        ("one.csv", b"x,y\n1,2\n", "at least"),
        ("empty.csv", b"", "empty"),
    ):
        at.get("file_uploader")[0].set_value((name, body, "text/csv")).run()
        assert not at.exception
        assert any(what in e.value for e in at.error), (name, [e.value for e in at.error])


def test_million_points_are_subsampled_with_a_warning():
    from geoflow.densities import MAX_POINTS

    at = run_page("train", data_source="type")
    rows = "\n".join(
        ["0.5,1.5", "1,2"] * 3 + [f"{i % 97 / 10},{i % 89 / 10}" for i in range(MAX_POINTS + 10)]
    )
    at.text_area(key="points_text").set_value(rows)
    at.button(key="text_go").click().run()
    assert not at.exception
    assert any("subset" in w.value for w in at.warning)
    assert at.session_state["user_densities"]["my_data"].points.shape == (MAX_POINTS, 2)


def test_empty_drawing_and_empty_text_are_messages():
    at = run_page("train", data_source="type")
    at.button(key="text_go").click().run()
    assert any("no points" in e.value for e in at.error)
    at.sidebar.radio(key="data_source").set_value("draw").run()
    assert not at.exception
    at.button(key="draw_go").click().run()
    assert any("empty" in e.value for e in at.error)


def test_generator_density_then_used_on_flows():
    at = run_page("train")
    at.number_input(key="gen_n").set_value(60)
    at.button(key="gen_go").click().run()
    assert not at.exception and not at.error
    at.switch_page("views/flows.py")
    at.session_state["flows.steps"] = 4
    at.session_state["flows.n"] = 100
    at.session_state["flows.density"] = "mine: my_data"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (spec,) = [s for s in specs(at) if "sliders" in s["layout"]]
    assert spec["layout"]["title"]["text"].startswith("my_data")
    assert "exact score" in spec["layout"]["title"]["text"]  # a point cloud is a kernel mixture


def test_two_sessions_with_the_same_density_name_do_not_share_cached_runs():
    """Caches are process-wide: a session's own 'my_data' must never serve another session's data."""

    def session(center: float) -> np.ndarray:
        at = run_page("train", data_source="type")
        pts = np.random.default_rng(0).normal(size=(30, 2)) * 0.1 + center
        at.text_area(key="points_text").set_value("\n".join(f"{a},{b}" for a, b in pts))
        at.button(key="text_go").click().run()
        at.switch_page("views/flows.py")
        at.session_state["flows.density"] = "mine: my_data"
        at.session_state["flows.steps"] = 3
        at.session_state["flows.n"] = 60
        at.run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        (spec,) = [s for s in specs(at) if "sliders" in s["layout"]]
        return particles_at(spec, 0)

    a, b = session(-2.0), session(2.0)
    assert abs(a.mean(0)[0] + 2.0) < 0.5 and abs(b.mean(0)[0] - 2.0) < 0.5


def test_training_job_runs_stops_and_exports(tmp_path):
    if str(ROOT / "app") not in sys.path:
        sys.path.insert(0, str(ROOT / "app"))
    import training as train

    pts = np.random.default_rng(0).normal(size=(200, 2))
    job = train.Job("blob", 60, with_projection=True)
    train.run_job(job, pts, "vp", 32)
    assert job.done and not job.error, job.error
    assert job.result["summary"]["steps"] == 60 and job.result["projection"] is not None
    from geoflow.checkpoints import load_model

    path = tmp_path / "m.safetensors"
    path.write_bytes(train.model_bytes(job.result["model"]))
    model = load_model(path, expect_kind="score")
    x = torch.randn(5, 2)
    t = torch.full((5,), 0.5)
    torch.testing.assert_close(model.score(x, t), job.result["model"].score(x, t))
    stopped = train.Job("blob", 5000, with_projection=False)
    stopped.stop.set()
    train.run_job(stopped, pts, "vp", 32)
    assert stopped.done and stopped.result["summary"]["stopped"] and stopped.result["summary"]["steps"] == 0


# --------------------------------------------------------------------------- The maths
def test_maths_page_and_prior_diagnostic():
    at = run_page("maths", **{"maths.density": "asymmetric"})
    assert len(at.latex) >= 6
    assert len([s for s in specs(at)]) >= 4
    assert any("matches the prior" in s.value for s in at.success)
    at.sidebar.slider(key="maths.beta_max").set_value(0.5).run()
    assert not at.exception
    assert any("far from the prior" in w.value for w in at.warning)


@pytest.mark.skipif("digits-classifier" not in read_manifest(), reason="no shipped digits classifier")
def test_images_quality_panel_shows_memorisation_and_nearest_training_images():
    at = run_page("images", img_quality=True, **{"images.steps": 3, "images.n": 16})
    assert not at.error, [e.value for e in at.error]
    labels = [m.label for m in at.metric]
    assert "median nearest-train / nearest-held-out distance" in labels
    assert "reference (held-out images)" in labels
    captions = [img.caption for im in at.get("image") for img in im.proto.imgs]
    assert any("nearest training image" in c for c in captions), captions
    assert at.success or at.warning  # the verdict is stated either way
