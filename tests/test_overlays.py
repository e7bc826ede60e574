"""The gradient-flow overlay (issue 14): exact-marginal contours, the interpolated JKO path, and the
per-frame W2 numbers the figure carries, checked against POT and against the figure JSON."""

from __future__ import annotations

import base64
import re

import numpy as np
import ot
import pytest
import torch

from geoflow import animation, figures, metrics, overlays, wgf
from geoflow.densities import get_density
from geoflow.run import RunSpec, generator, resolve_source, run


def decode(arr: dict | list) -> np.ndarray:
    if isinstance(arr, dict):
        a = np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]).newbyteorder("<"))
        return a.reshape([int(n) for n in arr["shape"].split(",")]) if "shape" in arr else a
    return np.asarray(arr)


@pytest.fixture(scope="module")
def flow():
    """eight_gaussians (a mixture; its JKO path ships precomputed), exact score, both overlays, agreement."""
    spec = RunSpec(data="eight_gaussians", score="exact", steps=8, n=300)
    density = get_density(spec.data)
    src = resolve_source(spec, density)
    traj = run(spec, density=density, source=src)
    ovs, notes = overlays.compute_overlays(("exact marginal", "JKO path"), spec, src, density, traj)
    assert not notes
    by_role = {o.role: o for o in ovs}
    agree = overlays.frame_agreement(spec, src.sde, density, traj, by_role["JKO path"].xy)
    layers = [figures.overlay_layer(o) for o in ovs]
    fig = animation.flow_animation(
        traj,
        title="t",
        bounds=overlays.plot_bounds(density, src.sde),
        layers=layers,
        agreement=agree,
        charts=True,
    )
    return spec, density, src, traj, by_role, agree, fig.to_dict()


def test_exact_marginal_is_a_contour_trace_in_every_frame(flow):
    *_, traj, by_role, _, d = flow
    names = [tr.get("name", "") for tr in d["data"]]
    i = next(k for k, n in enumerate(names) if n.startswith("exact p_t"))
    assert d["data"][i]["type"] == "contour"
    assert d["data"][i]["contours"]["coloring"] == "none"  # lines only, drawn lightly over white
    assert (d["data"][i]["contours"]["start"], d["data"][i]["contours"]["end"]) == (20.0, 80.0)
    assert len(d["frames"]) == traj.paths.shape[0]
    for fr in d["frames"]:
        tr = fr["data"][fr["traces"].index(i)]
        assert tr["type"] == "contour"
        z = decode(tr["z"])
        assert z.shape == (overlays.CONTOUR_GRID, overlays.CONTOUR_GRID) and z.min() <= 20 and z.max() >= 80


def test_mass_levels_enclose_their_share_of_the_density():
    g = np.linspace(-6, 6, 241)
    p = np.exp(-0.5 * (g[None, :] ** 2 + g[:, None] ** 2)) / (2 * np.pi)
    lv = overlays.mass_levels(p)
    r2 = g[None, :] ** 2 + g[:, None] ** 2
    # a standard 2-D normal: the disc holding mass q has radius^2 = -2 log(1 - q)
    for q in (0.2, 0.5, 0.8):
        inside = lv <= 100 * q
        assert abs(inside.sum() - (r2 <= -2 * np.log(1 - q)).sum()) / inside.sum() < 0.03


def test_sample_only_density_gets_a_closed_form_kde_marginal():
    spec = RunSpec(data="two_moons", steps=3, n=100)
    density = get_density("two_moons")
    mix, what = overlays.marginal_mixture(spec, density)
    assert "KDE" in what and mix.weights.numel() == overlays.KDE_POINTS
    traj = run(spec, density=density, source=resolve_source(spec, density))
    sde = resolve_source(spec, density).sde
    ov = overlays.exact_marginal_overlay(spec, sde, density, traj, overlays.plot_bounds(density, sde))
    assert ov.kind == "contour" and "KDE" in ov.name and ov.z.shape[0] == traj.paths.shape[0]
    # the separable grid equals the general mixture formula
    grid = np.linspace(-3, 3, 30)
    ref = wgf.marginal_density_grid(mix, sde, 0.3, (-3.0, 3.0), 30).P
    np.testing.assert_allclose(overlays.marginal_grid(mix, sde, 0.3, grid), ref, rtol=1e-4, atol=1e-7)


def test_jko_style_is_hollow_and_outside_the_particle_colours(flow):
    *_, traj, _, _, d = flow
    jko = next(tr for tr in d["data"] if tr.get("name", "").startswith("JKO path"))
    assert "interpolated" in jko["name"]
    assert jko["marker"]["symbol"].endswith("-open")
    parts = next(tr for tr in d["data"] if tr.get("name") == "particles")
    assert jko["marker"]["color"].lower() not in {c.lower() for c in parts["marker"]["color"]}
    # no colour of the map is that dark or that grey: every position colour has value 0.85, saturation >= 0.25
    rgb = np.array(
        [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in figures.position_colors(traj.paths[0])]
    )
    assert rgb.max(1).min() > 200 and ((rgb.max(1) - rgb.min(1)) / rgb.max(1)).min() >= 0.24
    # drawn under the particles
    names = [tr.get("name") for tr in d["data"]]
    assert names.index(jko["name"]) < names.index("particles")


def test_interpolated_jko_frames_lie_between_their_keyframes(flow):
    spec, density, src, traj, by_role, *_ = flow
    kf_t, kf_x = overlays.jko_keyframes(spec, src.sde, density)
    s_kf = wgf.flow_time(src.sde, kf_t)
    s_f = wgf.flow_time(src.sde, np.clip(traj.times, 0, src.sde.T))
    xy = by_role["JKO path"].xy
    checked = 0
    for f in range(0, len(s_f), 3):
        k = int(np.clip(np.searchsorted(s_kf, s_f[f], side="right") - 1, 0, len(s_kf) - 2))
        gap = metrics.exact_w2(kf_x[k], kf_x[k + 1])
        a, b = metrics.exact_w2(xy[f], kf_x[k]), metrics.exact_w2(xy[f], kf_x[k + 1])
        assert a <= gap + 1e-4 and b <= gap + 1e-4, (f, a, b, gap)
        assert a + b <= gap + 1e-3  # on the geodesic between them: the two distances add up
        checked += 1
    assert checked >= 5
    # at a keyframe's own time the interpolation is that keyframe (as a set of particles)
    z = metrics.displacement_interpolation(s_kf, kf_x, s_kf[[0, 5]])
    assert metrics.exact_w2(z[1], kf_x[5]) < 1e-4


def test_per_frame_w2_numbers_match_a_direct_pot_computation(flow):
    spec, density, src, traj, by_role, agree, d = flow
    m = agree["n_eval"]
    assert m == overlays.AGREEMENT_PARTICLES or m == traj.paths.shape[1]
    names = [tr.get("name", "") for tr in d["data"]]
    ip = names.index("particles")
    ij = next(k for k, n in enumerate(names) if n.startswith("JKO path"))
    u = np.full(m, 1.0 / m)
    sde = src.sde
    x0a = density.sample(m, generator(spec.seed, 26)).float()
    za = torch.randn(x0a.shape, generator=generator(spec.seed, 28))
    for f in (0, len(d["frames"]) // 2, len(d["frames"]) - 1):
        fr = d["frames"][f]
        p_tr, j_tr = fr["data"][fr["traces"].index(ip)], fr["data"][fr["traces"].index(ij)]
        parts = np.stack([decode(p_tr["x"]), decode(p_tr["y"])], 1).astype(np.float64)[:m]
        jko = np.stack([decode(j_tr["x"]), decode(j_tr["y"])], 1).astype(np.float64)[:m]
        w2_jko = np.sqrt(ot.emd2(u, u, ot.dist(parts, jko)))
        t = float(traj.times[f])
        ex = (sde.marginal_sample(x0a, t, noise=za) if t > 0 else x0a).numpy().astype(np.float64)
        w2_exact = np.sqrt(ot.emd2(u, u, ot.dist(parts, ex)))
        assert agree["w2_jko"][f] == pytest.approx(w2_jko, abs=1e-5)
        assert agree["w2_exact"][f] == pytest.approx(w2_exact, abs=1e-5)
        # the numbers the browser shows are the frame's own annotation text
        text = " ".join(a["text"] for a in fr["layout"]["annotations"])
        assert f"frame {f} of {len(d['frames']) - 1}" in text
        shown = dict(re.findall(r"W2 to (JKO|exact p_t) ([0-9.]+)", text))
        assert float(shown["JKO"]) == pytest.approx(w2_jko, abs=6e-4)
        assert float(shown["exact p_t"]) == pytest.approx(w2_exact, abs=6e-4)
        assert "floor" in text


def test_chart_cursors_follow_the_frame(flow):
    *_, traj, _, agree, d = flow
    cursors = [k for k, tr in enumerate(d["data"]) if tr.get("mode") == "markers" and tr.get("xaxis") == "x2"]
    assert cursors, "the W2 chart carries a cursor"
    k = cursors[0]
    for f in (1, len(d["frames"]) - 1):
        fr = d["frames"][f]
        tr = fr["data"][fr["traces"].index(k)]
        assert decode(tr["x"])[0] == pytest.approx(agree["t"][f], abs=1e-6)
        assert decode(tr["y"])[0] == pytest.approx(agree["w2_exact"][f], abs=1e-5)
