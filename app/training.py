"""Training helpers of the Train your own page (no widgets here, so tests can call them directly).

A training run is a :class:`Job` driven by :func:`run_job` in a background thread: the thread only writes
progress into the job; the page reads it from a fragment that reruns once a second, so the page stays
responsive and other sessions are not blocked. At most ``MAX_CONCURRENT_JOBS`` runs share the CPU.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import torch

from geoflow.densities import read_points_csv

MAX_TRAIN_STEPS = 20_000  # about 2-3 minutes on one CPU thread
MAX_CONCURRENT_JOBS = 2  # per process: a small shared CPU serves every session
GENERATORS = ("moons", "circles", "blobs", "swiss roll (2-D)", "s-curve (2-D)")


# --------------------------------------------------------------------------- data
def sklearn_points(kind: str, n: int, noise: float, seed: int) -> np.ndarray:
    """Points from scikit-learn's generators, scaled to about [-3, 3]^2."""
    from sklearn import datasets

    if kind == "moons":
        x, _ = datasets.make_moons(n, noise=noise, random_state=seed)
    elif kind == "circles":
        x, _ = datasets.make_circles(n, noise=noise, factor=0.5, random_state=seed)
    elif kind == "blobs":
        x, _ = datasets.make_blobs(n, centers=4, cluster_std=0.4 + noise, random_state=seed)
    elif kind == "swiss roll (2-D)":
        x3, _ = datasets.make_swiss_roll(n, noise=noise, random_state=seed)
        x = x3[:, [0, 2]]
    elif kind == "s-curve (2-D)":
        x3, _ = datasets.make_s_curve(n, noise=noise, random_state=seed)
        x = x3[:, [0, 2]]
    else:
        raise ValueError(f"unknown generator {kind!r}; valid: {', '.join(GENERATORS)}")
    x = x - x.mean(0)
    return x / np.abs(x).max() * 2.8


def parse_text_points(text: str) -> np.ndarray:
    """``x, y`` per line (the same rules as a CSV upload)."""
    if not text.strip():
        raise ValueError("no points given: type one 'x, y' pair per line, or draw / upload / generate")
    return read_points_csv(text.encode())


# --------------------------------------------------------------------------- training job
@dataclass
class Job:
    """A background training run: the thread writes progress; the page only reads it."""

    name: str
    steps: int
    with_projection: bool
    progress: float = 0.0
    loss: float = float("nan")
    phase: str = "starting"
    stop: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    error: str = ""
    result: dict | None = None
    started: float = field(default_factory=time.time)


_ACTIVE = threading.BoundedSemaphore(MAX_CONCURRENT_JOBS)


def run_job(job: Job, points: np.ndarray, sde_name: str, width: int) -> None:
    """Train (in a thread) a score model and, optionally, its projection network."""
    from geoflow.sde import make_sde
    from geoflow.train import TrainConfig, data_fn_from_tensor, make_score_model_2d, train_score

    if not _ACTIVE.acquire(blocking=False):
        job.error = f"the server is already training {MAX_CONCURRENT_JOBS} models; try again in a minute"
        job.done = True
        return
    try:
        torch.set_num_threads(1)
        data = torch.as_tensor(points, dtype=torch.float32)
        model = make_score_model_2d(
            make_sde(sde_name), float(data.std()), width=width, meta={"data": job.name}
        )

        def prog(phase: str, share: float, offset: float):
            def f(step: int, total: int, loss: float) -> None:
                job.phase, job.loss = phase, loss
                job.progress = offset + share * step / total

            return f

        share = 0.75 if job.with_projection else 1.0
        cfg = TrainConfig(steps=job.steps, batch_size=256, lr=2e-3, seed=0)
        job.phase = "score network"
        summary = train_score(
            model, data_fn_from_tensor(data), cfg, prog("score network", share, 0.0), job.stop.is_set
        )
        proj = None
        if job.with_projection and not job.stop.is_set():
            from geoflow.train import train_projection

            job.phase = "projection network"
            pcfg = TrainConfig(steps=max(200, job.steps // 3), batch_size=256, lr=1e-3, seed=1)
            proj = train_projection(
                model,
                data_fn_from_tensor(data),
                pcfg,
                progress=prog("projection", 0.25, 0.75),
                should_stop=job.stop.is_set,
                score_name=job.name,
            )
        job.result = {"model": model, "projection": proj, "id": uuid.uuid4().hex[:12], "summary": summary}
        job.progress = 1.0
    except (ValueError, RuntimeError) as e:
        job.error = str(e)
    finally:
        _ACTIVE.release()
        job.done = True


def model_bytes(model: torch.nn.Module) -> bytes:
    """The model as safetensors bytes with its config in the metadata (loadable by geoflow.checkpoints)."""
    from safetensors.torch import save

    from geoflow.checkpoints import META_KEY

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save(state, metadata={META_KEY: json.dumps(model.config())})
