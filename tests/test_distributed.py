"""Data-parallel training (geoflow.distributed) on the CPU: gloo, 2 processes under torchrun.

* after a few steps both ranks hold identical weights;
* the 2-process run at per-rank batch B equals a 1-process run at batch 2B on the same data: the
  1-process reference draws its 2B samples as the two ranks do (B from each rank's seed) and
  averages the two shard losses, which is what DDP's gradient average computes;
* ``torchrun -m geoflow train`` / ``train-projection`` write checkpoints that ``load_model`` reads,
  with the global batch recorded and said;
* a failing rank (a NaN loss, or a rank killed outright) ends the whole job non-zero in bounded time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geoflow import distributed
from geoflow.train import TrainConfig, dsm_loss, optimise

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dist_worker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 180  # a whole torchrun job, start to end; each normally takes seconds
pytestmark = pytest.mark.xdist_group("distributed")  # 2 processes each: one job at a time


def torchrun(*args: str, env: dict | None = None, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "GEOFLOW_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def _assert_ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, f"torchrun failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


# session scope: the xdist group interleaves this module with test_train_gpu.py, and a module
# fixture would be torn down and rerun (a 2-process job) when the worker comes back
@pytest.fixture(scope="session")
def two_rank_run(tmp_path_factory) -> dict[int, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("ddp")
    _assert_ok(torchrun(str(ROOT / "tests" / "dist_worker.py"), "train", str(out)))
    return {r: load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)}


def test_not_under_torchrun_is_single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.from_env() is None
    assert distributed.rank_seed(5, 0) == 5 and distributed.rank_seed(5, 1) != 5


def test_both_ranks_hold_identical_weights(two_rank_run):
    w0, w1 = two_rank_run[0], two_rank_run[1]
    assert w0.keys() == w1.keys() and all(k.startswith("net.net.") for k in w0)  # DDP unwrapped
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k


def test_two_ranks_match_one_process_at_twice_the_batch(two_rank_run):
    model, data = dist_worker.model_and_data()
    b, seed = dist_worker.BATCH, dist_worker.SEED
    gens = [torch.Generator().manual_seed(distributed.rank_seed(seed, r)) for r in (0, 1)]

    def loss_2b(_g: torch.Generator) -> torch.Tensor:
        # the global batch of 2B: rank r's B samples and noise from rank r's generator
        return torch.stack([dsm_loss(model, data(b, g), g) for g in gens]).mean()

    cfg = TrainConfig(steps=dist_worker.STEPS, batch_size=2 * b, lr=1e-2, seed=seed)
    optimise(model, loss_2b, cfg)
    ref = model.state_dict()
    start, _ = dist_worker.model_and_data()
    moved = max(float((ref[k] - start.state_dict()[k]).abs().max()) for k in ref)
    assert moved > 1e-3  # the comparison is not between two untrained models
    for k, v in ref.items():
        torch.testing.assert_close(two_rank_run[0][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_a_rank_with_a_nan_loss_ends_the_job(tmp_path):
    t0 = time.perf_counter()
    r = torchrun(str(ROOT / "tests" / "dist_worker.py"), "fail", str(tmp_path), timeout=TIMEOUT_S)
    assert r.returncode != 0
    assert "training diverged" in r.stdout + r.stderr
    assert not (tmp_path / "rank0.safetensors").exists()  # no rank finished
    assert time.perf_counter() - t0 < TIMEOUT_S


# --------------------------------------------------------------------------- the CLI under torchrun
def _cli_ready() -> None:
    if not (ROOT / "geoflow" / "__main__.py").exists():
        pytest.skip("python -m geoflow is not available yet")


def test_torchrun_geoflow_train_2d_writes_a_loadable_checkpoint(tmp_path):
    _cli_ready()
    from geoflow.checkpoints import load_model, read_config

    out = tmp_path / "m.safetensors"
    args = ["--density", "eight_gaussians", "--steps", "4", "--batch-size", "8", "--width", "16"]
    r = torchrun("-m", "geoflow", "train", *args, "--depth", "2", "--out", str(out))
    _assert_ok(r)
    assert "global batch 16" in r.stdout
    assert r.stdout.count("wrote") == 1  # rank 0 alone reports and writes
    model = load_model(out, expect_kind="score")
    assert model.meta["data"] == "eight_gaussians"
    train = read_config(out)["extra"]["train"]
    assert train["world_size"] == 2 and train["global_batch"] == 16 and train["batch_size"] == 8


def test_torchrun_image_score_and_projection(tmp_path):
    _cli_ready()
    from geoflow.checkpoints import load_model

    score = tmp_path / "digits.safetensors"
    r = torchrun(
        "-m", "geoflow", "train", "--data", "digits", "--steps", "2", "--batch-size", "4", "--out", str(score)
    )
    _assert_ok(r)
    assert load_model(score, expect_kind="score").meta["data"] == "digits"
    proj = tmp_path / "digits-proj.safetensors"
    r = torchrun(
        "-m", "geoflow", "train-projection", "--data", "digits", "--score", str(score),
        "--steps", "2", "--batch-size", "4", "--out", str(proj),
    )  # fmt: skip
    _assert_ok(r)
    assert "global batch 8" in r.stdout
    p = load_model(proj, expect_kind="projection")
    assert p.meta["train"]["world_size"] == 2


def test_a_killed_rank_ends_the_cli_job(tmp_path):
    """SIGKILL one worker mid-training (as the OOM killer would): torchrun stops the job, non-zero."""
    _cli_ready()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "geoflow", "train", "--density", "eight_gaussians", "--steps", "200000"]
    cmd += ["--batch-size", "64", "--out", str(tmp_path / "never.safetensors")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GEOFLOW_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        victim = None
        while victim is None and time.perf_counter() - t0 < 60:
            victim = _worker_pid(proc.pid, rank=1)
            time.sleep(0.5)
        assert victim is not None, "no rank-1 worker appeared"
        time.sleep(3)  # let it get into training
        os.kill(victim, signal.SIGKILL)
        rc = proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc != 0
    assert not (tmp_path / "never.safetensors").exists()
    assert time.perf_counter() - t0 < TIMEOUT_S


def _worker_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=rank among the descendants of ``parent`` (Linux /proc)."""
    todo, seen = [parent], set()
    while todo:
        pid = todo.pop()
        seen.add(pid)
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            try:
                env = Path(f"/proc/{k}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env and k not in seen:
                return k
            todo.append(k)
    return None
