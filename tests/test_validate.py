"""geoflow.validate: property-based tests (hypothesis) that no generated input raises anything but the
project's own ValueError, plus the limits table, output paths, text decoding and size estimates."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoflow import densities, jko, metrics, run, train
from geoflow.densities import GaussianMixture, mixture_from_spec, read_points_csv
from geoflow.validate import (
    LIMITS,
    InputError,
    check_device,
    check_exact_score,
    check_flow,
    check_mlp_training,
    check_output_path,
    check_seed,
    decode_text,
    json_depth,
    load_json,
    parse_float,
    parse_int,
)

# GEOFLOW_HYPOTHESIS_EXAMPLES=5000 for a deeper search than the default run's
EXAMPLES = int(os.environ.get("GEOFLOW_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=25,
)
numbers = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(10**400), 10**400)
    | st.sampled_from([0.0, 1.0, -1.0, 1e-13, 1e200, 0.5])
)


@st.composite
def mixture_specs(draw) -> dict:
    """Specs shaped like a mixture (k weights, k means, k covariances) with arbitrary numbers."""
    k = draw(st.integers(1, 4))
    shape_ok = draw(st.booleans())
    spec = {
        "weights": draw(st.lists(numbers, min_size=k, max_size=k)),
        "means": draw(st.lists(st.lists(numbers, min_size=2, max_size=2), min_size=k, max_size=k)),
        "covs": draw(
            st.lists(
                st.lists(st.lists(numbers, min_size=2, max_size=2), min_size=2, max_size=2),
                min_size=k if shape_ok else 0,
                max_size=k if shape_ok else 5,
            )
        ),
    }
    if draw(st.booleans()):  # often a valid-looking one: positive weights summing to 1, PD covariances
        spec["weights"] = [1.0 / k] * k
        spec["covs"] = [[[v, 0.0], [0.0, v]] for v in draw(st.lists(numbers, min_size=k, max_size=k))]
    if draw(st.booleans()):
        del spec[draw(st.sampled_from(sorted(spec)))]
    return spec


# --------------------------------------------------------------------------- property-based
@SETTINGS
@given(json_values)
def test_mixture_spec_from_any_json_value_raises_only_value_error(value):
    try:
        mixture_from_spec(
            value if isinstance(value, dict) else {"weights": value, "means": value, "covs": value}
        )
    except ValueError:
        pass


@SETTINGS
@given(mixture_specs())
def test_mixture_spec_of_mixture_shape_raises_only_value_error(spec):
    try:
        mix = mixture_from_spec(spec)
    except ValueError:
        return
    x = mix.sample(8, torch.Generator().manual_seed(0))  # an accepted spec gives finite samples
    assert torch.isfinite(x).all()


@SETTINGS
@given(st.one_of(mixture_specs(), json_values))
def test_mixture_spec_as_json_text_raises_only_value_error(spec):
    text = "{" + json.dumps(spec)[1:] if isinstance(spec, dict) else "{" + json.dumps(spec)
    try:
        mixture_from_spec(text)
    except ValueError:
        pass


@SETTINGS
@given(st.text(max_size=300))
def test_mixture_spec_from_any_text_raises_only_value_error(text):
    try:
        mixture_from_spec("{" + text)
    except ValueError:
        pass


cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.text(max_size=5),
    st.sampled_from(["", " ", "x", "1e999", "-0", "1_0", "nan", "inf"]),
)


@SETTINGS
@given(
    st.lists(st.lists(cells, min_size=1, max_size=3), min_size=0, max_size=30),
    st.sampled_from([",", ";", "\t", " "]),
)
def test_points_csv_raises_only_value_error(rows, sep):
    text = "\n".join(sep.join(r) for r in rows)
    try:
        pts = read_points_csv(text.encode("utf-8", errors="surrogatepass"))
    except ValueError:
        return
    assert pts.ndim == 2 and pts.shape[1] == 2 and np.isfinite(pts).all()
    assert np.abs(pts).max() <= LIMITS.coordinate


@SETTINGS
@given(st.binary(max_size=600))
def test_points_csv_from_any_bytes_raises_only_value_error(raw):
    try:
        read_points_csv(raw)
    except ValueError:
        pass


@SETTINGS
@given(
    st.one_of(
        st.text(max_size=40),
        st.integers(-(10**40), 10**40),
        st.floats(allow_nan=True),
        st.booleans(),
        st.none(),
    ),
    st.integers(-100, 100),
    st.integers(0, 200),
)
def test_parse_int_returns_an_int_in_range_or_input_error(raw, lo, span):
    hi = lo + span
    try:
        v = parse_int(raw, "x", lo, hi)
    except InputError as e:
        assert str(e).startswith(f"x must be an integer in [{lo}, {hi}], got ")
        return
    assert type(v) is int and lo <= v <= hi


@SETTINGS
@given(
    st.one_of(
        st.text(max_size=40), st.integers(-(10**400), 10**400), st.floats(allow_nan=True, allow_infinity=True)
    ),
    st.floats(-1e6, 1e6),
    st.floats(0, 1e6),
    st.booleans(),
    st.booleans(),
)
def test_parse_float_returns_a_finite_number_in_range_or_input_error(raw, lo, span, lo_open, hi_open):
    hi = lo + span
    try:
        v = parse_float(raw, "y", lo, hi, lo_open=lo_open, hi_open=hi_open)
    except InputError as e:
        assert str(e).startswith("y must be a finite number in ")
        return
    assert math.isfinite(v) and lo <= v <= hi
    assert not (lo_open and v == lo) and not (hi_open and v == hi)


@SETTINGS
@given(st.text(max_size=400))
def test_load_json_raises_only_input_error(text):
    try:
        load_json(text, "spec")
    except InputError:
        pass


@SETTINGS
@given(json_values)
def test_json_depth_counts_the_nesting(value):
    def depth(v) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        return 0

    assert json_depth(json.dumps(value)) == depth(value)


@SETTINGS
@given(st.binary(max_size=300))
def test_decode_text_returns_text_or_input_error(raw):
    try:
        assert isinstance(decode_text(raw, "upload"), str)
    except InputError as e:
        assert str(e).startswith("upload ")


# --------------------------------------------------------------------------- examples
def test_every_limit_is_defined_once_and_imported():
    # the same objects, not equal numbers written twice
    pairs = [
        (run.MAX_STEPS, LIMITS.sample_steps),
        (run.MAX_N, LIMITS.particles),
        (run.MAX_SEED, LIMITS.seed),
        (run.MAX_STRENGTH, LIMITS.strength),
        (run.MAX_RECORD_BYTES, LIMITS.record_bytes),
        (densities.MAX_POINTS, LIMITS.max_points),
        (densities.MAX_COMPONENTS, LIMITS.components),
        (train.MAX_TRAIN_STEPS, LIMITS.train_steps),
        (jko.MAX_JKO_PARTICLES, LIMITS.flow_particles),
    ]
    for alias, limit in pairs:
        assert alias is limit
    assert LIMITS.min_points == densities.MIN_POINTS and LIMITS.min_particles == metrics.MIN_PARTICLES
    assert LIMITS.seed == 2**31 - 1
    with pytest.raises(AttributeError):
        LIMITS.seed = 5  # type: ignore[misc]


def test_seed_message_names_the_range():
    with pytest.raises(
        InputError, match=r"seed must be an integer in \[0, 2147483647\], got 1180591620717411303424"
    ):
        check_seed(2**70)
    assert check_seed("12") == 12


def test_huge_deep_and_undecodable_json_is_refused_with_its_name():
    with pytest.raises(InputError, match="nested 5000 levels deep; the limit is 16"):
        load_json("[" * 5000 + "]" * 5000, "spec")
    with pytest.raises(InputError, match="too many digits"):
        load_json("[" + "9" * 5000 + "]", "spec")
    with pytest.raises(InputError, match="the limit is"):
        load_json(" " * (LIMITS.spec_bytes + 1), "spec")
    with pytest.raises(InputError, match=r"my.json is not UTF-8 text \(byte 0xe9 at position 1\)"):
        decode_text(b"{\xe9}", "my.json")
    assert decode_text("x,y\n1,2".encode("utf-16"), "u16") == "x,y\n1,2"  # a UTF-16 file with its BOM
    assert decode_text(b"\xef\xbb\xbfa", "bom") == "a"


def test_spec_and_csv_files_are_named_in_errors(tmp_path):
    (tmp_path / "d.json").mkdir()
    with pytest.raises(ValueError, match="'.*d.json' is a directory"):
        densities.load_density(str(tmp_path / "d.json"))
    (tmp_path / "bad.csv").write_bytes(b"x,y\n1,2\xff\n")
    with pytest.raises(ValueError, match="bad.csv' is not UTF-8"):
        densities.load_density(str(tmp_path / "bad.csv"))
    (tmp_path / "deep.json").write_text("[" * 10_000 + "]" * 10_000)
    with pytest.raises(ValueError, match="deep.json' is nested"):
        densities.load_density(str(tmp_path / "deep.json"))


def test_output_paths_are_checked_before_work(tmp_path):
    assert check_output_path(tmp_path / "new" / "a.npy", (".npy",)) == tmp_path / "new" / "a.npy"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(InputError, match=r"--out must end in .npy or .csv, got 'm.txt'"):
        check_output_path(tmp_path / "m.txt", (".npy", ".csv"))
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(InputError, match="existing directory"):
        check_output_path(tmp_path / "dir.npy", (".npy",))
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_path(tmp_path / "file" / "sub" / "a.npy", (".npy",))
    with pytest.raises(InputError, match="system directory"):
        check_output_path("/proc/x.safetensors", (".safetensors",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.npy", "file"]  # the probe is gone


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only directory")
def test_unwritable_directory_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="is not writable"):
            check_output_path(ro / "a.npy", (".npy",))
    finally:
        ro.chmod(0o700)


def test_devices_list_what_is_available():
    assert check_device("cpu") == "cpu"
    with pytest.raises(InputError, match="unknown device 'nope'; available: cpu"):
        check_device("nope")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available here; available: cpu"):
            check_device("cuda")


def test_train_config_names_the_wrong_field():
    with pytest.raises(ValueError, match="^batch size must be an integer"):
        train.TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="^learning rate lr must be a finite number in"):
        train.TrainConfig(lr=float("nan"))
    with pytest.raises(ValueError, match=r"^EMA decay ema must be a finite number in \[0, 1\)"):
        train.TrainConfig(ema=1.0)
    with pytest.raises(ValueError, match="^unknown device"):
        train.TrainConfig(device="nope")


def test_divergence_is_its_own_error():
    assert issubclass(train.TrainingDiverged, RuntimeError)
    model = train.make_score_model_2d(run.make_sde("vp"), width=8, depth=1)
    bad = torch.full((64, 2), float("nan"))
    with pytest.raises(train.TrainingDiverged, match="diverged at step 1") as e:
        train.train_score(model, train.data_fn_from_tensor(bad), train.TrainConfig(steps=5, batch_size=8))
    assert e.value.step == 1


def test_size_estimates_refuse_before_allocating():
    with pytest.raises(InputError, match=r"5000-component mixture on 1000000 samples needs about .* GiB"):
        check_exact_score(1_000_000, 5000, 2)
    check_exact_score(1000, 5000, 2)
    with pytest.raises(InputError, match="parameters"):
        check_mlp_training(4096, 64, 1)
    with pytest.raises(InputError, match="lower --batch-size"):
        check_mlp_training(1024, 8, LIMITS.batch_size)
    with pytest.raises(InputError, match="width must be an integer"):
        train.make_score_model_2d(run.make_sde("vp"), width=60_000)
    with pytest.raises(InputError, match="h must be a number in"):
        check_flow(1000, 20, 1e-9, 5.0)
    with pytest.raises(InputError, match="work"):
        check_flow(5000, 1000, 0.1, 5.0)
    assert check_flow(1000, 20, 0.1, 5.0) == 70


def test_run_refuses_the_exact_score_of_a_huge_mixture_before_sampling():
    k = 5000
    ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
    mix = GaussianMixture(
        np.full(k, 1 / k), np.stack([np.cos(ang), np.sin(ang)], 1), np.tile(np.eye(2) * 0.01, (k, 1, 1))
    )
    spec = run.RunSpec(data="big", score="exact", n=1_000_000, steps=10, start="prior", record=0)
    with pytest.raises(ValueError, match="GiB of memory"):
        run.run(spec, density=mix)


def test_jko_path_refuses_too_many_steps_before_work():
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="JKO steps"):
        jko.jko_path(x, run.make_sde("vp"), 1e-7, 3, cache=False)
    with pytest.raises(ValueError, match="keyframes must be an integer in"):
        jko.jko_path(x, run.make_sde("vp"), 0.1, 10**9, cache=False)
