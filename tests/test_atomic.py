"""Atomic writes (geoflow.atomic): a killed training, a failing writer or a full disk never leaves a
half-written file at the output path, nor a temporary file beside it."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from geoflow.atomic import atomic_write
from geoflow.checkpoints import load_model, save_model
from geoflow.sde import make_sde
from geoflow.train import make_score_model_2d

REPO = Path(__file__).resolve().parents[1]

# a `geoflow train` that reports each progress call on stdout, so the test kills it mid-training
CHILD = """
import sys
import geoflow.cli.common as t
orig = t.progress_bar
def progress_bar(total, desc):
    update, close = orig(total, desc)
    def report(step, total_, loss):
        print("STEP", step, flush=True)
        update(step, total_, loss)
    return report, close
t.progress_bar = progress_bar
from geoflow.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_training_leaves_no_checkpoint_and_no_temporary_file(tmp_path):
    out = tmp_path / "models" / "m.safetensors"
    argv = [
        "train",
        "--density",
        "eight_gaussians",
        "--steps",
        "200000",
        "--batch-size",
        "64",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "GEOFLOW_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        seen = 0
        while seen < 100 and time.monotonic() < deadline:  # two progress reports: training is under way
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            if line.startswith("STEP"):
                seen = int(line.split()[1])
        assert seen >= 100, proc.stderr.read() if proc.poll() is not None else "no progress reported"  # type: ignore[union-attr]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    leftovers = list(out.parent.iterdir()) if out.parent.exists() else []
    assert leftovers == []  # no temporary file either (the output check's probe is removed too)


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "x.npy"
    atomic_write(path, b"old")

    def half_then_fail(f):
        f.write(b"half of the new con")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_an_interrupted_write_leaves_nothing(tmp_path):
    path = tmp_path / "new.npz"

    def interrupted(f):
        f.write(b"PK")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_creates_parents_and_usual_permissions(tmp_path):
    path = tmp_path / "a" / "b" / "arr.npy"
    atomic_write(path, lambda f: np.save(f, np.arange(3)))
    assert np.load(path).tolist() == [0, 1, 2]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_model_is_atomic_and_round_trips(tmp_path, monkeypatch):
    model = make_score_model_2d(make_sde("vp"), width=8, depth=1)
    path = save_model(model, tmp_path / "m.safetensors")
    assert load_model(path).config()["net"] == model.config()["net"]
    before = path.read_bytes()

    # a crash while the new file is written: the old checkpoint survives intact
    def crash(src, dst):
        raise OSError(errno.EIO, "simulated crash at rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_model(make_score_model_2d(make_sde("vp"), width=16, depth=1), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
