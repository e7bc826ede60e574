"""The live chart's wire form (geoflow.wire): every array comes back within its stated error, NaN line
breaks and log-axis values exactly, and the packed Flows figure is a third of its JSON."""

from __future__ import annotations

import json

import numpy as np
import plotly.io as pio
import pytest

from geoflow import animation, figures, overlays, wire
from geoflow.densities import get_density
from geoflow.run import RunSpec, resolve_source, run


def _arrays(v, path=""):
    """Every typed array of a plotly JSON tree, by its path."""
    if isinstance(v, dict):
        if "dtype" in v and "bdata" in v:
            yield path, figures._decode_typed(v)
            return
        for k, x in v.items():
            yield from _arrays(x, f"{path}/{k}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _arrays(x, f"{path}/{i}")


def _without_arrays(v):
    if isinstance(v, dict):
        if "dtype" in v and "bdata" in v:
            return "ARRAY"
        return {k: _without_arrays(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_without_arrays(x) for x in v]
    return v


@pytest.fixture(scope="module")
def flows_figure():
    spec = RunSpec(data="eight_gaussians", score="exact", steps=12, n=400)
    density = get_density(spec.data)
    src = resolve_source(spec, density)
    traj = run(spec, density=density, source=src)
    arrays, _ = overlays.compute_overlays(
        ("velocity field", "warped grid", "exact marginal"), spec, src, density, traj
    )
    fig = animation.flow_animation(
        traj,
        title="t",
        bounds=overlays.plot_bounds(density, src.sde),
        layers=[figures.overlay_layer(a) for a in arrays],
    )
    return json.loads(pio.to_json(fig, validate=False))


def test_quantise_error_is_within_half_a_step_and_marks_nan():
    rng = np.random.default_rng(0)
    a = rng.normal(size=5000).astype(np.float32) * 3
    a[[3, 70]] = np.nan
    a[99] = np.inf
    q, lo, step = wire.quantise(a)
    assert q.dtype == np.int16 and q.shape == (5000,)
    fin = np.isfinite(a)
    assert lo == pytest.approx(float(a[fin].min()))
    assert step == pytest.approx((float(a[fin].max()) - lo) / 65534)
    back = wire.dequantise(q, lo, step)
    assert np.isnan(back[[3, 70, 99]]).all()
    err = np.abs(back[fin].astype(np.float64) - a[fin])
    # half a level, plus float32's rounding of the result
    assert err.max() <= step / 2 + np.abs(a[fin]).max() * 2**-23
    assert err.max() > 0  # it really is lossy: the bound is what is being tested
    # the two ends of the range are exact levels
    assert back[fin].min() == pytest.approx(a[fin].min(), abs=1e-6)
    assert back[fin].max() == pytest.approx(a[fin].max(), abs=1e-6)


def test_constant_and_all_nan_arrays_come_back_exactly():
    q, lo, step = wire.quantise(np.full(100, 2.5, np.float32))
    assert step == 0 and (wire.dequantise(q, lo, step) == 2.5).all()
    q, lo, step = wire.quantise(np.full(100, np.nan, np.float32))
    assert np.isnan(wire.dequantise(q, lo, step)).all()


def test_flows_figure_round_trip(flows_figure):
    blob = wire.pack_figure(flows_figure)
    back = wire.unpack_figure(blob)
    # everything but the arrays is the same JSON
    assert _without_arrays(back) == _without_arrays(flows_figure)
    got = dict(_arrays(back))
    want = dict(_arrays(flows_figure))
    assert got.keys() == want.keys() and len(want) > 100
    n_q = 0
    for path, a in want.items():
        b = got[path]
        assert b.shape == a.shape, path
        assert np.array_equal(np.isnan(a.astype(float)), np.isnan(b.astype(float))), path
        fin = np.isfinite(a.astype(float))
        if a.dtype == np.uint8 or a.size < wire.MIN_QUANTISED:
            assert np.array_equal(a[fin], b[fin]), path  # kept exactly
        else:
            n_q += 1
            span = float(a[fin].max() - a[fin].min()) if fin.any() else 0.0
            assert np.abs(a[fin].astype(np.float64) - b[fin]).max(initial=0) <= span / 131068 + 1e-6, path
    assert n_q > 50  # the particles and the overlays' arrays were quantised


def test_packed_flows_figure_is_a_third_of_its_json(flows_figure):
    text = pio.to_json(flows_figure, validate=False).encode()
    assert len(wire.pack_figure(flows_figure)) < 0.4 * len(text)


def test_log_axis_and_short_arrays_stay_float32():
    y = np.geomspace(1e-4, 10, 200).astype(np.float32)  # a chart of KL on a log axis
    x = np.linspace(0, 1, 200).astype(np.float32)
    fig = {
        "data": [
            {"type": "scatter", "x": x, "y": y, "xaxis": "x2", "yaxis": "y2"},
            {"type": "scatter", "x": x, "y": y},
            {"type": "scatter", "x": x[:5], "y": y[:5]},
        ],
        "layout": {"yaxis2": {"type": "log"}},
        "frames": [{"name": "0", "data": [{"y": y}, {"y": y}], "traces": [0, 1]}],
    }
    back = wire.unpack_figure(wire.pack_figure(fig))
    dec = figures._decode_typed
    assert np.array_equal(dec(back["data"][0]["y"]), y)  # log axis: exact
    assert np.array_equal(dec(back["frames"][0]["data"][0]["y"]), y)  # a frame takes its trace's axes
    assert not np.array_equal(dec(back["data"][1]["y"]), y)  # linear axis: quantised
    assert np.abs(dec(back["data"][1]["y"]) - y).max() <= 10 / 131068 + 1e-6
    assert np.array_equal(dec(back["data"][2]["y"]), y[:5])  # too short to quantise


def test_two_dimensional_arrays_keep_their_shape():
    z = np.arange(64 * 48, dtype=np.uint8).reshape(64, 48)
    g = np.linspace(-1, 1, 64 * 48, dtype=np.float32).reshape(64, 48)
    back = wire.unpack_figure(wire.pack_figure({"data": [{"type": "contour", "z": z, "x": g}], "layout": {}}))
    assert np.array_equal(figures._decode_typed(back["data"][0]["z"]), z)
    assert figures._decode_typed(back["data"][0]["x"]).shape == (64, 48)


def test_bad_blobs_are_refused_clearly():
    with pytest.raises(ValueError, match="not a packed geoflow figure"):
        wire.unpack_figure(b'{"data": []}')
    blob = wire.pack_figure({"data": [{"x": np.arange(1000, dtype=np.float32)}], "layout": {}})
    with pytest.raises(ValueError, match="cut short"):
        wire.unpack_figure(blob[:-10])
    with pytest.raises(ValueError, match="cut short"):
        wire.unpack_figure(blob[:12])
