"""scripts/train_gpu.sh on the CPU (``--cpu-smoke``): the GPU script's own commands, tiny.

The same torchrun trainings (score model, then projection network; 2 gloo processes instead of one
per GPU), the same measuring and shipping script, into a temporary directory: the weights load, the
manifest entries carry their sha256, the command, the global batch and the measured quality.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from geoflow.checkpoints import load_model, read_config, sha256

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.xdist_group("distributed")  # 2 processes: not beside the other DDP tests


def test_train_gpu_script_cpu_smoke(tmp_path):
    run_dir, shipped = tmp_path / "run", tmp_path / "shipped"
    cmd = ["bash", str(ROOT / "scripts" / "train_gpu.sh"), "--cpu-smoke", "--run-dir", str(run_dir)]
    cmd += ["--to", str(shipped)]
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", str(ROOT / ".venv" / "bin" / "python"))}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "global batch 8" in r.stdout  # 2 ranks x per-rank batch 4, said by the CLI
    manifest = json.loads((shipped / "MANIFEST.json").read_text())["models"]
    assert set(manifest) == {"shapes32-vp", "shapes32-vp-proj"}
    for name, kind in (("shapes32-vp", "score"), ("shapes32-vp-proj", "projection")):
        entry, path = manifest[name], shipped / f"{name}.safetensors"
        assert entry["kind"] == kind and entry["sha256"] == sha256(path)
        assert "torchrun --standalone --nproc-per-node 2 -m geoflow" in entry["command"]
        assert "--data shapes32" in entry["command"]
        model = load_model(path, expect_kind=kind)
        assert model.meta["data"] == "shapes32"
    score = manifest["shapes32-vp"]
    assert score["quality"]["n_samples"] == 16 and score["floor"] == score["quality"]["floor"]
    assert {q["sampler"] for q in score["quality"]["other_samplers"]} >= {
        "predict_project",
        "dpm_solver_pp_2m",
    }
    train = read_config(shipped / "shapes32-vp.safetensors")["extra"]["train"]
    assert train["world_size"] == 2 and train["global_batch"] == 8
    assert (run_dir / "shapes32-samples.png").stat().st_size > 0
    # nothing shipped for real
    assert "shapes32-vp" not in json.loads((ROOT / "pretrained" / "MANIFEST.json").read_text())["models"]
