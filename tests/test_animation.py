"""Animated figures with several panels and one slider, their stills, and exports rendered from them
(issue 13): GIF/MP4 frames are the screen's own figure, so an overlay shows up in the exported pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from geoflow import animation, export, figures, overlays
from geoflow.densities import get_density
from geoflow.run import RunSpec, resolve_source, run

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
needs_chromium = pytest.mark.skipif(export.find_chromium() is None, reason="kaleido needs Chromium")


def _runs(**b):
    spec = RunSpec(data="eight_gaussians", score="exact", steps=6, n=120)
    density = get_density(spec.data)
    src = resolve_source(spec, density)
    ta = run(spec, density=density, source=src)
    from dataclasses import replace

    tb = run(replace(spec, **b), density=density, source=src)
    return spec, density, src, ta, tb


def test_common_frames_hold_each_run_at_its_last_step():
    times = [np.array([0.0, 0.5, 1.0, 1.0, 0.5, 0.0]), np.array([0.0, 1.0, 1.0, 0.0])]
    phases = [["noising"] * 3 + ["generation"] * 3, ["noising"] * 2 + ["generation"] * 2]
    labels, idx = animation.common_frames(times, phases)
    assert labels == [
        "noising t=0.000",
        "noising t=0.500",
        "noising t=1.000",
        "generation t=1.000",
        "generation t=0.500",
        "generation t=0.000",
    ]
    np.testing.assert_array_equal(idx[0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(idx[1], [0, 0, 1, 2, 2, 3])  # B holds t=0 (noising), then t=1 (generating)


def test_comparison_figure_one_slider_equal_frames_same_start():
    spec, density, src, ta, tb = _runs(steps=3, sampler="ddim")
    fig = animation.comparison_animation(
        [ta, tb], ["A", "B"], bounds=overlays.plot_bounds(density, src.sde), title="A vs B"
    )
    d = fig.to_dict()
    parts = [i for i, tr in enumerate(d["data"]) if tr.get("name") == "particles"]
    assert len(parts) == 2 and d["data"][parts[1]]["xaxis"] == "x2"
    assert d["layout"]["xaxis2"]["matches"] == "x" and d["layout"]["yaxis2"]["matches"] == "y"
    assert len(d["layout"]["sliders"]) == 1 and len(d["layout"]["updatemenus"]) == 1
    assert all(set(parts) <= set(fr["traces"]) for fr in d["frames"])  # every frame moves both panels
    still = animation.still_figure(fig, 0)
    np.testing.assert_array_equal(np.asarray(still.data[parts[0]].x), np.asarray(still.data[parts[1]].x))
    n_gen = sum(
        lab.startswith("generation") for lab in (s["label"] for s in d["layout"]["sliders"][0]["steps"])
    )
    assert n_gen >= 6 + 1  # the union of both grids
    last = animation.still_figure(fig, len(d["frames"]) - 1)
    np.testing.assert_allclose(np.asarray(last.data[parts[0]].x), ta.paths[-1, :, 0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(last.data[parts[1]].x), tb.paths[-1, :, 0], atol=1e-6)


def test_still_figure_carries_the_frames_notes():
    paths = np.random.default_rng(0).normal(size=(3, 10, 2)).astype(np.float32)
    fig = animation.particle_animation(paths, ["a", "b", "c"], notes=["n0", "n1", "n2"])
    still = animation.still_figure(fig, 2)
    assert [a.text for a in still.layout.annotations] == ["n2"]
    assert still.layout.title.text.endswith("(c)")


def test_slide_style_scales_fonts_and_markers():
    paths = np.zeros((2, 5, 2), np.float32)
    still = animation.still_figure(animation.particle_animation(paths, ["a", "b"], notes=["x", "y"]), 1)
    base_ann = still.layout.annotations[0].font.size
    out = export.styled(still, export.EXPORT_STYLES["slide"])
    assert (out.layout.width, out.layout.height) == (1920, 1080)
    assert out.layout.font.size == pytest.approx(16 * 1.75)
    assert out.layout.annotations[0].font.size == pytest.approx(base_ann * 1.75)
    assert out.data[-1].marker.size == pytest.approx(5 * 1.6)


def test_animation_frames_are_bounded():
    assert export.animation_frames(40) == list(range(40))
    picks = export.animation_frames(403)
    assert len(picks) == export.MAX_ANIMATION_FRAMES and picks[0] == 0 and picks[-1] == 402


@needs_chromium
def test_exported_gif_shows_the_overlay_in_its_pixels():
    """GIF frames come from the same figure as the screen: the JKO overlay's markers are in them."""
    import imageio.v3 as iio

    spec, density, src, traj, _ = _runs()
    (jko,) = [
        figures.overlay_layer(o)
        for o in overlays.compute_overlays(("JKO path",), spec, src, density, traj)[0]
    ]
    bounds = overlays.plot_bounds(density, src.sde)
    style = export.ExportStyle("test", 480, 400)
    frames = [0, traj.paths.shape[0] - 1]
    gifs = {}
    for name, layers in (("on", [jko]), ("off", [])):
        fig = animation.flow_animation(traj, title="gif", bounds=bounds, layers=layers)
        done = []
        imgs = export.render_frames(
            fig, frames, style=style, progress=lambda d, n, done=done: done.append((d, n))
        )
        assert done[-1] == (2, 2) and imgs[0].shape == (400, 480, 3)
        gifs[name] = export.gif_bytes(imgs)
    on, off = (iio.imread(io.BytesIO(gifs[k]), index=None)[..., :3].astype(int) for k in ("on", "off"))
    assert on.shape == off.shape
    diff = np.abs(on - off).sum(-1) > 60
    assert diff[0].sum() > 200  # the overlay changed many pixels of the first frame
    px = on[0][diff[0]]
    grey = (px.max(1) - px.min(1)) < 60
    dark = px.max(1) < 190
    assert (grey & dark).mean() > 0.5, (
        "the changed pixels are the JKO markers' dark grey, not particle colours"
    )
    # and they lie in the plot, not only in the legend
    rows, cols = np.nonzero(diff[0])
    assert ((rows > 120) & (rows < 330) & (cols > 100) & (cols < 400)).sum() > 100
    ARTIFACTS.mkdir(exist_ok=True)
    for k, v in gifs.items():
        (ARTIFACTS / f"export_overlay_{k}.gif").write_bytes(v)


@needs_chromium
def test_slide_png_and_mp4_from_the_figure():
    from PIL import Image

    paths = np.random.default_rng(2).normal(size=(3, 50, 2)).astype(np.float32)
    fig = animation.particle_animation(paths, ["a", "b", "c"], title="slide")
    png = export.static_image(animation.still_figure(fig, 1), "png", style=export.EXPORT_STYLES["slide"])
    assert Image.open(io.BytesIO(png)).size == (1920, 1080)
    imgs = export.render_frames(fig, style=export.ExportStyle("t", 320, 240))
    assert len(imgs) == 3
    assert export.mp4_bytes(imgs)[4:8] == b"ftyp"
