"""The command line: listings, train -> sample round trip, exact scores from a spec, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geoflow.cli import main
from geoflow.densities import DENSITY_NAMES


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_listings_name_every_density_and_sampler(capsys):
    code, out, _ = run(capsys, "densities")
    assert code == 0
    for name in DENSITY_NAMES:
        assert name in out
    code, out, _ = run(capsys, "samplers")
    assert code == 0
    for name in ("euler_maruyama", "ode_heun", "ddim", "dpm_solver_pp_2m", "predictor_corrector"):
        assert name in out


def test_sample_exact_score_from_spec_file(tmp_path, capsys):
    spec = {"weights": [0.4, 0.6], "means": [[-2, 0], [2, 0]], "covs": [[[0.1, 0], [0, 0.1]]] * 2}
    spec_path = tmp_path / "two.json"
    spec_path.write_text(json.dumps(spec))
    out = tmp_path / "s.npy"
    argv = ["sample", "--density", str(spec_path), "--score", "exact", "--sampler", "dpm_solver_pp_2m"]
    code, stdout, err = run(capsys, *argv, "--steps", "20", "--n", "2000", "--out", str(out))
    assert code == 0, err
    assert "logsnr time grid" in stdout  # the CLI says which spacing it uses
    x = np.load(out)
    assert x.shape == (2000, 2) and x.dtype == np.float32
    right = (x[:, 0] > 0).mean()
    assert abs(right - 0.6) < 0.04  # mode weights recovered by the exact score
    assert abs(np.abs(x[:, 0]).mean() - 2.0) < 0.1


def test_train_then_sample_from_file_csv_output(tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    code, _, err = run(
        capsys, "train", "--density", "asymmetric", "--steps", "30", "--batch-size", "64", "--out", str(model)
    )
    assert code == 0, err
    out = tmp_path / "s.csv"
    argv = ["sample", "--density", "asymmetric", "--score", str(model), "--steps", "10", "--n", "50"]
    code, _, err = run(capsys, *argv, "--out", str(out))
    assert code == 0, err
    rows = out.read_text().strip().splitlines()
    assert rows[0] == "x,y" and len(rows) == 51


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["sample", "--density", "nope", "--out", "x.npy"], "valid: eight_gaussians"),
        (["sample", "--density", "two_moons", "--score", "exact", "--out", "x.npy"], "no exact score"),
        (
            ["sample", "--density", "asymmetric", "--score", "exact", "--sampler", "bogus", "--out", "x.npy"],
            "valid:",
        ),
        (
            ["sample", "--density", "asymmetric", "--score", "exact", "--steps", "0", "--out", "x.npy"],
            "steps",
        ),
        (
            ["sample", "--density", "asymmetric", "--score", "missing.safetensors", "--out", "x.npy"],
            "does not exist",
        ),
        (["sample", "--density", "asymmetric", "--score", "exact", "--out", "x.txt"], ".npy or .csv"),
        (["sample", "--density", "bad.json", "--out", "x.npy"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and "Traceback" not in err
    assert needle in lines[0]


def test_corrupt_score_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    code, _, err = run(capsys, "sample", "--density", "asymmetric", "--score", str(bad), "--out", "x.npy")
    assert code == 2 and "safetensors" in err
