"""The project's bad-input corpus for the command line and the library (issue 10).

Each case is what a careless or hostile user might type. Every one must end with the right exit
status (2 for a user error, 1 for an internal one), ONE line on stderr that names the problem (a
keyword is checked), no traceback, and bounded time and memory. Most cases run in-process
(``geoflow.cli.main`` with ``capsys``); the inputs that once ran away with memory or time run again
in a subprocess (``python -m geoflow``) under an address-space limit, with their CPU time and peak
memory measured.
"""

# ruff: noqa: E501  (the corpus is a table: one case per line)

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from geoflow.checkpoints import META_KEY, save_model
from geoflow.cli import main
from geoflow.nets import MLP, MLPConfig
from geoflow.score import ScoreModel
from geoflow.sde import make_sde
from geoflow.train import make_image_score_model, make_score_model_2d, new_projection_model
from geoflow.validate import LIMITS

REPO = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 3 << 30  # address space of a subprocess case
CPU_LIMIT_S = 20.0  # CPU seconds of one subprocess case (wall time depends on the machine's load)
TIME_LIMIT_S = 20.0  # wall seconds of one in-process case


# --------------------------------------------------------------------------- fixtures: the bad files
def _mixture(k: int) -> dict:
    ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return {
        "weights": [1.0 / k] * k,
        "means": np.stack([np.cos(ang), np.sin(ang)], 1).round(6).tolist(),
        "covs": [[[0.01, 0.0], [0.0, 0.01]]] * k,
    }


def _tiny_checkpoint(path: Path, cfg: object) -> None:
    """A valid safetensors file of one small tensor whose geoflow config is ``cfg`` (any JSON)."""
    save_file({"a": torch.zeros(2)}, str(path), metadata={META_KEY: json.dumps(cfg)})


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """A folder of bad (and a few good) inputs; every case runs with it as the working directory."""
    d = tmp_path_factory.mktemp("bad")
    vp, ve = make_sde("vp"), make_sde("ve")
    ok2d = make_score_model_2d(vp, width=16, depth=2, meta={"data": "asymmetric"})
    save_model(ok2d, d / "vp.safetensors")
    save_model(make_score_model_2d(ve, width=16, depth=2), d / "ve.safetensors")
    save_model(ScoreModel(MLP(MLPConfig(dim=3, width=16, depth=2)), vp), d / "m3.safetensors")
    save_model(make_image_score_model("digits", vp), d / "img.safetensors")
    other = make_score_model_2d(vp, width=16, depth=2, seed=1)
    save_model(new_projection_model(other, score_name="other"), d / "proj_other.safetensors")
    cfg = ok2d.config()
    state = {k: v.contiguous() for k, v in ok2d.state_dict().items()}
    save_file(
        state,
        str(d / "nan_std.safetensors"),
        metadata={META_KEY: json.dumps({**cfg, "data_std": float("nan")})},
    )
    save_file(state, str(d / "bare.safetensors"))
    nan_state = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    save_file(nan_state, str(d / "nan_w.safetensors"), metadata={META_KEY: json.dumps(cfg)})
    wide = {**cfg, "net": {**cfg["net"], "width": 50000}}
    _tiny_checkpoint(d / "wide.safetensors", wide)
    _tiny_checkpoint(d / "w4000.safetensors", {**cfg, "net": {**cfg["net"], "width": 4000}})
    _tiny_checkpoint(d / "deep_net.safetensors", {**cfg, "net": {**cfg["net"], "depth": 10**9}})
    _tiny_checkpoint(d / "list.safetensors", [1, 2, 3])
    _tiny_checkpoint(d / "null.safetensors", None)
    _tiny_checkpoint(d / "str.safetensors", "score")
    _tiny_checkpoint(d / "teapot.safetensors", {"kind": "teapot"})
    _tiny_checkpoint(d / "netlist.safetensors", {**cfg, "net": [128, 3]})
    _tiny_checkpoint(d / "sde_bad.safetensors", {**cfg, "sde": {"type": "xx"}})
    _tiny_checkpoint(d / "sde_nan.safetensors", {**cfg, "sde": {**cfg["sde"], "beta_max": float("nan")}})
    _tiny_checkpoint(d / "meta_list.safetensors", {**cfg, "meta": [1]})
    _tiny_checkpoint(d / "shape_bad.safetensors", {**cfg, "meta": {"shape": [1, 8, 8]}})
    _tiny_checkpoint(d / "nested.safetensors", {"kind": "score", "x": json.loads("[" * 40 + "]" * 40)})
    raw = (d / "vp.safetensors").read_bytes()
    (d / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    (d / "junk.safetensors").write_bytes(b"this is not a safetensors file at all")
    (d / "empty.safetensors").write_bytes(b"")
    (d / "dir.safetensors").mkdir()
    # specs
    (d / "big.json").write_text(json.dumps(_mixture(5000)))
    (d / "too_many.json").write_text(json.dumps(_mixture(5001)))
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "deep_obj.json").write_text('{"weights": ' + "[" * 30 + "1" + "]" * 30 + "}")
    one = '{"weights": [1.0], "means": [[0, 0]], "covs": [[[1, 0], [0, 1]]], "name": "caf\xe9"}'
    (d / "latin1.json").write_bytes(one.encode("latin-1"))
    (d / "huge.json").write_text('{"weights": [1], "means": [[1e200, 0]], "covs": [[[1, 0], [0, 1]]]}')
    (d / "hugecov.json").write_text('{"weights": [1], "means": [[0, 0]], "covs": [[[1e300, 0], [0, 1]]]}')
    (d / "bigint.json").write_text(
        '{"weights": [1], "means": [[' + "9" * 5000 + ', 0]], "covs": [[[1, 0], [0, 1]]]}'
    )
    (d / "inf.json").write_text('{"weights": [1], "means": [[Infinity, 0]], "covs": [[[1, 0], [0, 1]]]}')
    (d / "nan.json").write_text('{"weights": [NaN], "means": [[0, 0]], "covs": [[[1, 0], [0, 1]]]}')
    (d / "notjson.json").write_text("{weights: 1}")
    (d / "array.json").write_text("[1, 2, 3]")
    (d / "missing_keys.json").write_text('{"weights": [1]}')
    (d / "negw.json").write_text(
        '{"weights": [-1, 2], "means": [[0, 0], [1, 1]], "covs": [[[1, 0], [0, 1]], [[1, 0], [0, 1]]]}'
    )
    (d / "sum.json").write_text(
        '{"weights": [0.3, 0.3], "means": [[0, 0], [1, 1]], "covs": [[[1, 0], [0, 1]], [[1, 0], [0, 1]]]}'
    )
    (d / "notpd.json").write_text('{"weights": [1], "means": [[0, 0]], "covs": [[[1, 2], [2, 1]]]}')
    (d / "asym.json").write_text('{"weights": [1], "means": [[0, 0]], "covs": [[[1, 0.5], [0, 1]]]}')
    (d / "means3d.json").write_text('{"weights": [1], "means": [[0, 0, 0]], "covs": [[[1, 0], [0, 1]]]}')
    (d / "strmeans.json").write_text('{"weights": [1], "means": [["a", "b"]], "covs": [[[1, 0], [0, 1]]]}')
    (d / "empty.json").write_text("")
    (d / "large.json").write_text(" " * (LIMITS.spec_bytes + 10))
    (d / "d.json").mkdir()
    # point clouds
    (d / "p.csv").mkdir()
    (d / "latin1.csv").write_bytes(b"x,y\n" + "\n".join(f"{i},{i}\xe9" for i in range(20)).encode("latin-1"))
    (d / "three.csv").write_text("\n".join(f"{i},{i},{i}" for i in range(20)))
    (d / "text.csv").write_text("x,y\n" + "\n".join(f"{i},{i}" for i in range(20)) + "\nfoo,bar\n")
    (d / "nan.csv").write_text("\n".join(f"{i},{'nan' if i == 5 else i}" for i in range(20)))
    (d / "few.csv").write_text("1,2\n3,4\n")
    (d / "far.csv").write_text("\n".join(f"{i}e200,{i}" for i in range(20)))
    (d / "empty.csv").write_text("")
    (d / "a_file").write_text("not a folder")
    (d / "out.npy").mkdir()
    return d


# --------------------------------------------------------------------------- the corpus
SAMPLE = ["sample", "--density", "asymmetric", "--score", "exact", "--steps", "3", "--n", "10"]
TRAIN = ["train", "--density", "asymmetric", "--steps", "3", "--batch-size", "8"]
FLOW = ["flow", "--density", "asymmetric", "--keyframes", "3", "--n", "20"]
TPROJ = ["train-projection", "--density", "asymmetric", "--score", "vp.safetensors", "--steps", "3"]


def _score(file: str, *extra: str) -> list[str]:
    return ["sample", "--density", "asymmetric", "--score", file, "--steps", "3", "--n", "10", *extra]


def _dens(spec: str, *extra: str) -> list[str]:
    return ["sample", "--density", spec, "--score", "exact", "--steps", "3", "--n", "10", *extra]


# (id, argv, exit status, keyword of the one-line message)
CASES: list[tuple[str, list[str], int, str]] = [
    # ---- numbers
    ("seed_2_70", [*SAMPLE, "--seed", str(2**70), "--out", "s.npy"], 2, "seed must be an integer in [0, 2147483647]"),
    ("seed_negative", [*SAMPLE, "--seed", "-1", "--out", "s.npy"], 2, "seed must be an integer"),
    ("seed_fraction", [*TRAIN, "--seed", "1.5", "--out", "m.safetensors"], 2, "seed must be an integer"),
    ("seed_text", [*TRAIN, "--seed", "abc", "--out", "m.safetensors"], 2, "seed must be an integer"),
    ("steps_zero", [*SAMPLE, "--steps", "0", "--out", "s.npy"], 2, "steps must be an integer in [1, 5000]"),
    ("steps_1e9", [*SAMPLE, "--steps", "1000000000", "--out", "s.npy"], 2, "steps must be an integer"),
    ("steps_inf", [*SAMPLE, "--steps", "inf", "--out", "s.npy"], 2, "steps must be an integer"),
    ("n_zero", [*SAMPLE, "--n", "0", "--out", "s.npy"], 2, "n must be an integer in [1, 1000000]"),
    ("n_1e7", [*SAMPLE, "--n", "10000000", "--out", "s.npy"], 2, "n must be an integer"),
    ("strength_nan", [*SAMPLE, "--sampler", "predict_project", "--strength", "nan", "--out", "s.npy"], 2, "strength must be a finite number"),
    ("strength_inf", [*SAMPLE, "--sampler", "predict_project", "--strength", "inf", "--out", "s.npy"], 2, "strength must be a finite number"),
    ("strength_neg", [*SAMPLE, "--sampler", "predict_project", "--strength", "-1", "--out", "s.npy"], 2, "strength"),
    ("strength_5000", [*SAMPLE, "--sampler", "predict_project", "--strength", "5000", "--out", "s.npy"], 2, "[0, 1000]"),
    ("strength_no_knob", [*SAMPLE, "--strength", "1", "--out", "s.npy"], 2, "has no projection strength"),
    ("lr_zero", [*TRAIN, "--lr", "0", "--out", "m.safetensors"], 2, "lr must be a finite number in (0"),
    ("lr_negative", [*TRAIN, "--lr", "-1", "--out", "m.safetensors"], 2, "lr must be"),
    ("lr_nan", [*TRAIN, "--lr", "nan", "--out", "m.safetensors"], 2, "lr must be"),
    ("lr_1e13", [*TRAIN, "--lr", "1e13", "--out", "m.safetensors"], 2, "lr must be"),
    ("lr_diverges", [*TRAIN, "--steps", "200", "--lr", "1e12", "--out", "m.safetensors"], 2, "training diverged"),
    ("batch_zero", [*TRAIN, "--batch-size", "0", "--out", "m.safetensors"], 2, "batch size must be an integer"),
    ("batch_1e8", [*TRAIN, "--batch-size", "100000000", "--out", "m.safetensors"], 2, "batch size"),
    ("batch_memory", [*TRAIN, "--batch-size", str(LIMITS.batch_size), "--out", "m.safetensors"], 2, "memory"),
    ("width_zero", [*TRAIN, "--width", "0", "--out", "m.safetensors"], 2, "width must be an integer"),
    ("width_60000", [*TRAIN, "--width", "60000", "--out", "m.safetensors"], 2, "width must be an integer"),
    ("depth_negative", [*TRAIN, "--depth", "-1", "--out", "m.safetensors"], 2, "depth must be an integer"),
    ("depth_1000", [*TRAIN, "--depth", "1000", "--out", "m.safetensors"], 2, "depth must be an integer"),
    ("params", [*TRAIN, "--width", "4096", "--depth", "64", "--out", "m.safetensors"], 2, "parameters"),
    ("ema_one", [*TPROJ, "--ema", "1", "--out", "p.safetensors"], 2, "ema must be a finite number in [0, 1)"),
    ("ema_nan", [*TPROJ, "--ema", "nan", "--out", "p.safetensors"], 2, "ema must be"),
    ("n_steps_one", [*TPROJ, "--mode", "fixed_N", "--n-steps", "1", "--out", "p.safetensors"], 2, "n-steps"),
    ("keyframes_1e9", [*FLOW, "--keyframes", "1000000000", "--out", "f.npz"], 2, "keyframes must be an integer"),
    ("keyframes_one", [*FLOW, "--keyframes", "1", "--out", "f.npz"], 2, "keyframes must be an integer"),
    ("flow_n_1e8", [*FLOW, "--n", "100000000", "--out", "f.npz"], 2, "n must be an integer in [10, 5000]"),
    ("flow_n_3", [*FLOW, "--n", "3", "--out", "f.npz"], 2, "n must be an integer"),
    ("flow_h_tiny", [*FLOW, "--h", "1e-9", "--out", "f.npz"], 2, "h must be a number in (0"),
    ("flow_h_huge", [*FLOW, "--h", "1e9", "--out", "f.npz"], 2, "h must be a number in (0"),
    ("flow_h_nan", [*FLOW, "--h", "nan", "--out", "f.npz"], 2, "h must be a number"),
    ("flow_work", ["flow", "--density", "asymmetric", "--n", "5000", "--keyframes", "1000", "--out", "f.npz"], 2, "work"),
    ("flow_seed", [*FLOW, "--seed", "-5", "--out", "f.npz"], 2, "seed must be an integer"),
    # ---- names
    ("density_unknown", ["sample", "--density", "nope", "--out", "s.npy"], 2, "valid: eight_gaussians"),
    ("sampler_unknown", [*SAMPLE, "--sampler", "bogus", "--out", "s.npy"], 2, "valid: euler_maruyama"),
    ("sde_unknown", [*SAMPLE, "--sde", "xx", "--out", "s.npy"], 2, "invalid choice"),
    ("spacing_unknown", [*SAMPLE, "--spacing", "xx", "--out", "s.npy"], 2, "invalid choice"),
    ("projection_unknown", [*SAMPLE, "--sampler", "predict_project", "--projection", "xx", "--out", "s.npy"], 2, "invalid choice"),
    ("mode_unknown", [*TPROJ, "--mode", "sometimes", "--out", "p.safetensors"], 2, "valid: random_dt, fixed_N"),
    ("image_set_unknown", ["sample", "--data", "cifar", "--out", "s.npy"], 2, "valid: digits"),
    ("classifier_set_unknown", ["train-classifier", "--data", "cifar", "--out", "c.safetensors"], 2, "valid: digits"),
    ("device_nope", [*TRAIN, "--device", "nope", "--out", "m.safetensors"], 2, "available: cpu"),
    ("device_cuda_99", [*TRAIN, "--device", "cuda:99", "--out", "m.safetensors"], 2, "available: cpu"),
    ("suite_unknown", ["bench", "--suite", "xx"], 2, "invalid choice"),
    ("command_unknown", ["frobnicate"], 2, "invalid choice"),
    ("out_missing", ["sample", "--density", "asymmetric"], 2, "required: --out"),
    ("density_and_data", ["sample", "--density", "asymmetric", "--data", "digits", "--out", "s.npy"], 2, "not allowed with"),
    ("no_exact_score", ["sample", "--density", "two_moons", "--score", "exact", "--out", "s.npy"], 2, "no exact score"),
    ("score_unknown", ["sample", "--density", "asymmetric", "--score", "nosuchmodel", "--out", "s.npy"], 2, "unknown score"),
    ("projection_for_em", [*SAMPLE, "--projection", "tweedie", "--out", "s.npy"], 2, "takes no projection"),
    ("learned_without_net", [*SAMPLE, "--sampler", "predict_project", "--projection", "learned", "--out", "s.npy"], 2, "no learned projection"),
    # ---- output paths
    ("out_proc", [*SAMPLE, "--out", "/proc/x.npy"], 2, "system directory"),
    ("out_proc_train", [*TRAIN, "--out", "/proc/x.safetensors"], 2, "system directory"),
    ("out_is_dir", [*SAMPLE, "--out", "out.npy"], 2, "existing directory"),
    ("out_parent_file", [*SAMPLE, "--out", "a_file/s.npy"], 2, "is a file, not a folder"),
    ("out_ext_sample", [*SAMPLE, "--out", "x.txt"], 2, ".npy or .csv"),
    ("out_ext_train", [*TRAIN, "--out", "m.txt"], 2, "must end in .safetensors"),
    ("out_ext_flow", [*FLOW, "--out", "f.npy"], 2, "must end in .npz"),
    ("out_ext_figure", [*FLOW, "--figure", "f.txt", "--out", "f.npz"], 2, "--figure must end in"),
    ("out_ext_classifier", ["train-classifier", "--data", "digits", "--out", "c.pt"], 2, "must end in .safetensors"),
    ("out_ext_projection", [*TPROJ, "--out", "p.bin"], 2, "must end in .safetensors"),
    ("out_csv_images", ["sample", "--data", "digits", "--out", "d.csv"], 2, "CSV output is for 2-D samples"),
    # ---- specs
    ("spec_dir", _dens("d.json", "--out", "s.npy"), 2, "is a directory"),
    ("spec_missing", _dens("bad.json", "--out", "s.npy"), 2, "does not exist"),
    ("spec_deep", _dens("deep.json", "--out", "s.npy"), 2, "nested 100000 levels deep"),
    ("spec_deep_obj", _dens("deep_obj.json", "--out", "s.npy"), 2, "levels deep"),
    ("spec_latin1", _dens("latin1.json", "--out", "s.npy"), 2, "latin1.json' is not UTF-8"),
    ("spec_huge_mean", _dens("huge.json", "--out", "s.npy"), 2, "means must lie within"),
    ("spec_huge_cov", _dens("hugecov.json", "--out", "s.npy"), 2, "covariance"),
    ("spec_bigint", _dens("bigint.json", "--out", "s.npy"), 2, "too many digits"),
    ("spec_inf", _dens("inf.json", "--out", "s.npy"), 2, "NaN or infinite"),
    ("spec_nan", _dens("nan.json", "--out", "s.npy"), 2, "NaN or infinite"),
    ("spec_not_json", _dens("notjson.json", "--out", "s.npy"), 2, "not valid JSON"),
    ("spec_array", _dens("array.json", "--out", "s.npy"), 2, "must be a JSON object"),
    ("spec_missing_keys", _dens("missing_keys.json", "--out", "s.npy"), 2, "lacks means, covs"),
    ("spec_negative_weight", _dens("negw.json", "--out", "s.npy"), 2, "positive"),
    ("spec_weight_sum", _dens("sum.json", "--out", "s.npy"), 2, "sum to 1"),
    ("spec_not_pd", _dens("notpd.json", "--out", "s.npy"), 2, "not positive definite"),
    ("spec_asymmetric", _dens("asym.json", "--out", "s.npy"), 2, "symmetric"),
    ("spec_3d", _dens("means3d.json", "--out", "s.npy"), 2, "[x, y] points"),
    ("spec_strings", _dens("strmeans.json", "--out", "s.npy"), 2, "only numbers"),
    ("spec_empty", _dens("empty.json", "--out", "s.npy"), 2, "not valid JSON"),
    ("spec_too_large", _dens("large.json", "--out", "s.npy"), 2, "the limit is 4 MiB"),
    ("spec_too_many", _dens("too_many.json", "--out", "s.npy"), 2, "at most 5000 components"),
    ("spec_memory", ["sample", "--density", "big.json", "--score", "exact", "--n", "1000000", "--out", "s.npy"], 2, "GiB of memory"),
    # ---- point clouds
    ("csv_dir", _dens("p.csv", "--out", "s.npy"), 2, "is a directory"),
    ("csv_missing", _dens("nope.csv", "--out", "s.npy"), 2, "does not exist"),
    ("csv_latin1", _dens("latin1.csv", "--out", "s.npy"), 2, "not UTF-8"),
    ("csv_three_columns", _dens("three.csv", "--out", "s.npy"), 2, "expected 2 columns"),
    ("csv_text", _dens("text.csv", "--out", "s.npy"), 2, "non-numeric value"),
    ("csv_nan", _dens("nan.csv", "--out", "s.npy"), 2, "NaN or infinite"),
    ("csv_few", _dens("few.csv", "--out", "s.npy"), 2, "at least 10 points"),
    ("csv_far", _dens("far.csv", "--out", "s.npy"), 2, "points must lie within"),
    ("csv_empty", _dens("empty.csv", "--out", "s.npy"), 2, "empty"),
    # ---- checkpoints
    ("ckpt_missing", _score("missing.safetensors", "--out", "s.npy"), 2, "does not exist"),
    ("ckpt_dir", _score("dir.safetensors", "--out", "s.npy"), 2, "is not a file"),
    ("ckpt_truncated", _score("trunc.safetensors", "--out", "s.npy"), 2, "not a readable safetensors file"),
    ("ckpt_junk", _score("junk.safetensors", "--out", "s.npy"), 2, "not a readable safetensors file"),
    ("ckpt_empty", _score("empty.safetensors", "--out", "s.npy"), 2, "not a readable safetensors file"),
    ("ckpt_no_config", _score("bare.safetensors", "--out", "s.npy"), 2, "no geoflow config"),
    ("ckpt_list", _score("list.safetensors", "--out", "s.npy"), 2, "must be a JSON object, got an array"),
    ("ckpt_null", _score("null.safetensors", "--out", "s.npy"), 2, "must be a JSON object, got null"),
    ("ckpt_string", _score("str.safetensors", "--out", "s.npy"), 2, "must be a JSON object, got a string"),
    ("ckpt_kind", _score("teapot.safetensors", "--out", "s.npy"), 2, "unknown model kind 'teapot'"),
    ("ckpt_net_list", _score("netlist.safetensors", "--out", "s.npy"), 2, "network config must be a JSON object"),
    ("ckpt_nan_std", _score("nan_std.safetensors", "--out", "s.npy"), 2, "data_std must be a finite number"),
    ("ckpt_width_50000", _score("wide.safetensors", "--out", "s.npy"), 2, "width must be an integer in [1, 4096]"),
    ("ckpt_width_4000", _score("w4000.safetensors", "--out", "s.npy"), 2, "weights do not match the stored config"),
    ("ckpt_depth_1e9", _score("deep_net.safetensors", "--out", "s.npy"), 2, "depth must be an integer"),
    ("ckpt_sde", _score("sde_bad.safetensors", "--out", "s.npy"), 2, "type vp or ve"),
    ("ckpt_sde_nan", _score("sde_nan.safetensors", "--out", "s.npy"), 2, "beta_max must be a finite number"),
    ("ckpt_meta_list", _score("meta_list.safetensors", "--out", "s.npy"), 2, "meta must be a JSON object"),
    ("ckpt_shape", _score("shape_bad.safetensors", "--out", "s.npy"), 2, "does not match its network"),
    ("ckpt_nested", _score("nested.safetensors", "--out", "s.npy"), 2, "levels deep"),
    ("ckpt_nan_weights", _score("nan_w.safetensors", "--out", "s.npy"), 2, "NaN or infinite weights"),
    ("ckpt_projection_as_score", _score("proj_other.safetensors", "--out", "s.npy"), 2, "expected a score model"),
    ("ckpt_score_as_projection", _score("vp.safetensors", "--sampler", "predict_project", "--projection-file", "vp.safetensors", "--out", "s.npy"), 2, "expected a projection model"),
    ("ckpt_projection_mismatch", _score("vp.safetensors", "--sampler", "predict_project", "--projection-file", "proj_other.safetensors", "--out", "s.npy"), 2, "does not match"),
    ("projection_file_exact", [*SAMPLE, "--sampler", "predict_project", "--projection-file", "proj_other.safetensors", "--out", "s.npy"], 2, "needs a score network"),
    # ---- model kinds
    ("kind_3d_for_2d", _score("m3.safetensors", "--out", "s.npy"), 2, "is a 3-D model"),
    ("kind_image_for_2d", _score("img.safetensors", "--out", "s.npy"), 2, "is an image model"),
    ("kind_2d_for_digits", ["sample", "--data", "digits", "--score", "vp.safetensors", "--out", "s.npy"], 2, "is a 2-D model"),
    ("kind_ve_as_vp", _score("ve.safetensors", "--sde", "vp", "--out", "s.npy"), 2, "trained for the VE SDE"),
    ("kind_projection_3d", ["train-projection", "--density", "asymmetric", "--score", "m3.safetensors", "--out", "p.safetensors"], 2, "is a 3-D model"),
    ("kind_projection_digits", ["train-projection", "--data", "digits", "--score", "vp.safetensors", "--out", "p.safetensors"], 2, "is a 2-D model"),
    ("image_memory", ["sample", "--data", "digits", "--score", "img.safetensors", "--n", "1000000", "--steps", "2", "--out", "d.npy"], 2, "GiB of memory"),
]  # fmt: skip

# the inputs that ran away with memory or time before: again in a subprocess, measured
RUNAWAY = (
    "batch_1e8",
    "batch_memory",
    "width_60000",
    "params",
    "steps_1e9",
    "keyframes_1e9",
    "flow_n_1e8",
    "flow_h_tiny",
    "flow_work",
    "spec_memory",
    "spec_deep",
    "ckpt_width_50000",
    "image_memory",
    "lr_diverges",
)


def _check_message(code: int, err: str, want_code: int, keyword: str) -> None:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == want_code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("geoflow") and (": error: " in lines[0] or "internal error" in lines[0]), (
        lines[0]
    )
    assert keyword in lines[0], lines[0]


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
    assert set(RUNAWAY) <= {c[0] for c in CASES}


@pytest.mark.parametrize(("argv", "code", "keyword"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_in_process(bad, monkeypatch, capsys, argv, code, keyword):
    monkeypatch.chdir(bad)
    monkeypatch.setenv("GEOFLOW_THREADS", "1")
    before = set(os.listdir(bad))
    t0 = time.perf_counter()
    got = main(argv)
    elapsed = time.perf_counter() - t0
    out = capsys.readouterr()
    _check_message(got, out.err, code, keyword)
    assert elapsed < TIME_LIMIT_S
    assert set(os.listdir(bad)) == before  # a refused run writes nothing (no output, no temporary)


def _run_limited(argv: list[str], cwd: Path) -> tuple[int, str]:
    """``python -m geoflow argv`` under an address-space limit: its exit status and stderr."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {**os.environ, "PYTHONPATH": str(REPO), "GEOFLOW_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "geoflow", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=limit,
    )
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("case", RUNAWAY)
def test_runaway_inputs_are_refused_in_bounded_time_and_memory(bad, case):
    argv, code, keyword = next(c[1:] for c in CASES if c[0] == case)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    got, err = _run_limited(argv, bad)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    _check_message(got, err, code, keyword)
    assert cpu < CPU_LIMIT_S, f"{case} used {cpu:.1f} s of CPU"
    # ru_maxrss (KiB) of RUSAGE_CHILDREN is the largest child so far: every case stays far below the cap
    assert after.ru_maxrss * 1024 < MEMORY_LIMIT


def test_help_of_every_command_states_its_limits(capsys):
    expect = {
        "train": [str(LIMITS.train_steps), str(LIMITS.width), str(LIMITS.depth), str(LIMITS.batch_size), str(LIMITS.seed)],
        "sample": [str(LIMITS.sample_steps), str(LIMITS.particles), "1000", "2 GiB"],
        "flow": [str(LIMITS.keyframes), str(LIMITS.flow_particles), str(LIMITS.jko_steps)],
        "train-projection": [str(LIMITS.train_steps), str(LIMITS.projection_grid)],
        "train-classifier": [str(LIMITS.train_steps)],
    }  # fmt: skip
    for command, needles in expect.items():
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "limits (geoflow.validate.LIMITS" in text and "exit status" in text
        for needle in needles:
            assert needle in text, (command, needle)


def test_internal_error_is_one_line_naming_command_and_inputs(bad, monkeypatch, capsys):
    import geoflow.cli.sample as sample_cmd

    def boom(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.chdir(bad)
    monkeypatch.setattr(sample_cmd, "run", boom)
    code = main([*SAMPLE, "--out", "s.npy"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    line = lines[0]
    assert line.startswith("geoflow sample: internal error (ZeroDivisionError: division by zero) with ")
    assert "--density asymmetric" in line and "--score exact" in line and "rerun with --debug" in line
    # --debug (before or after the command) adds the traceback
    for argv in (["--debug", *SAMPLE, "--out", "s.npy"], [*SAMPLE, "--debug", "--out", "s.npy"]):
        assert main(argv) == 1
        assert "Traceback" in capsys.readouterr().err


def test_user_error_with_debug_shows_the_traceback(bad, monkeypatch, capsys):
    monkeypatch.chdir(bad)
    assert main(["--debug", "sample", "--density", "nope", "--out", "s.npy"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith(
        "geoflow sample: error: unknown density"
    )


def test_python_dash_m_geoflow_runs(tmp_path):
    out = tmp_path / "s.csv"
    argv = [*SAMPLE, "--out", str(out)]
    got, err = _run_limited(argv, tmp_path)
    assert got == 0, err
    assert out.read_text().splitlines()[0] == "x,y"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_good_run_after_the_corpus_still_works(bad, monkeypatch, capsys):
    """The refusals leave no state behind: the same process then samples normally."""
    monkeypatch.chdir(bad)
    assert main([*SAMPLE, "--out", "ok.npy"]) == 0
    assert np.load(bad / "ok.npy").shape == (10, 2)
    (bad / "ok.npy").unlink()
