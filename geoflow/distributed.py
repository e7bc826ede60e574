"""Data-parallel training under ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --standalone --nproc-per-node K -m geoflow train ...`` starts K processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` in their environment;
:func:`from_env` turns those into a process group (gloo on CPU, nccl on CUDA, one GPU per process)
and returns ``None`` without them, so plain single-process training is untouched.

What each rank does (:func:`ddp_optimise`, called by :func:`geoflow.train.optimise` when given a
:class:`DistContext`):

* its network (``model.net``) is wrapped in DDP, which broadcasts rank 0's initial weights and
  averages the gradients of every step over the ranks (an all-reduce per backward);
* it draws its own minibatches and noise from the seed :func:`rank_seed` (rank 0's is the
  single-process seed), so the global batch is ``per-rank batch x K`` distinct samples and the
  averaged gradient is that of the mean loss over the global batch;
* only rank 0 reports progress; a stop request on any rank stops all of them at the same step;
* every rank ends with the same (EMA) weights; the caller saves on rank 0 only (``is_main``).

Failures: the process group has a timeout (``GEOFLOW_DIST_TIMEOUT`` seconds, default 300), so a
collective waiting for a rank that hangs raises instead of blocking forever; a rank that dies or
raises ends the job through torchrun, which stops the other workers and exits non-zero.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

TIMEOUT_ENV = "GEOFLOW_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
# rank r's stream: seed + r * RANK_STRIDE, far from the small seeds users pick by hand
RANK_STRIDE = 1_000_003
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str  # "gloo" or "nccl"
    device: str  # "cpu" or "cuda:<local_rank>"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints and writes checkpoints."""
        return self.rank == 0

    def global_batch(self, per_rank: int) -> int:
        """Samples per optimisation step over all ranks."""
        return per_rank * self.world_size

    def describe(self, per_rank: int) -> str:
        """One line for the CLI: the job's shape and its global batch."""
        return (
            f"data-parallel over {self.world_size} processes ({self.backend}, {self.device.split(':')[0]}): "
            f"per-rank batch {per_rank} x {self.world_size} = global batch {self.global_batch(per_rank)}"
        )


def under_torchrun() -> bool:
    """Whether torchrun (or an equivalent launcher) set this process's rank variables."""
    return all(v in os.environ for v in _TORCHRUN_VARS)


def rank_seed(seed: int, rank: int) -> int:
    """The data/noise seed of a rank (rank 0 keeps ``seed``: a 1-process job is a plain run)."""
    return int(seed) + RANK_STRIDE * int(rank)


def _timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be positive, got {raw!r}")
    return value


def from_env(device: str = "cpu", timeout_s: float | None = None) -> DistContext | None:
    """Join the process group torchrun describes in the environment; ``None`` outside torchrun.

    Args:
        device: the device asked for (``cpu``, ``cuda`` or ``cuda:N``); under torchrun a CUDA
            request becomes ``cuda:<LOCAL_RANK>`` (one GPU per process) with the nccl backend.
        timeout_s: collective timeout (default: ``GEOFLOW_DIST_TIMEOUT`` or 300 s).

    Raises:
        ValueError: CUDA asked for but unavailable, or fewer GPUs than local processes.
    """
    if not under_torchrun():
        return None
    import torch.distributed as dist

    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda under torchrun, but CUDA is not available here")
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local} has no GPU: {torch.cuda.device_count()} visible; "
                "start at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(local)
        backend, dev = "nccl", f"cuda:{local}"
    elif str(device) == "cpu":
        backend, dev = "gloo", "cpu"
    else:
        raise ValueError(f"data-parallel training runs on cpu or cuda, not {device!r}")
    timeout = datetime.timedelta(seconds=timeout_s if timeout_s is not None else _timeout_s())
    if not dist.is_initialized():
        kwargs = {"device_id": torch.device(dev)} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=timeout, **kwargs)
    return DistContext(rank=rank, world_size=world, local_rank=local, backend=backend, device=dev)


def share_cpu_threads(ctx: DistContext | None) -> None:
    """On the CPU, split the cores between this machine's ranks (K processes x T threads <= cores).

    ``GEOFLOW_THREADS`` set by the user wins; on a GPU the setting does not matter much.
    """
    if ctx is None or ctx.backend != "gloo" or os.environ.get("GEOFLOW_THREADS"):
        return
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // max(local, 1))))


@contextmanager
def job(device: str = "cpu") -> Iterator[DistContext | None]:
    """The process group of a torchrun job for the block (``None`` outside torchrun), then left."""
    ctx = from_env(device)
    share_cpu_threads(ctx)
    try:
        yield ctx
    finally:
        shutdown(ctx)


def leave(ctx: DistContext | None, code: int) -> int:
    """End a finished rank with exit status ``code``, skipping the interpreter's teardown.

    With torch 2.13 and gloo, a rank that has finished and left the group can still abort at
    interpreter exit ("terminate called without an active exception", in about 1 of 8 two-process
    runs on this machine, after ``destroy_process_group``), failing a job whose work is done. A rank
    that is done flushes its output and ends with ``os._exit``. Outside torchrun: returns ``code``.
    """
    if ctx is None:
        return code
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def shutdown(ctx: DistContext | None) -> None:
    """Leave the process group (a no-op outside torchrun)."""
    import torch.distributed as dist

    if ctx is not None and dist.is_initialized():
        # every rank done with its collectives before any tears its connections down; without the
        # barrier a rank that leaves first can abort the other in gloo's threads at exit
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext | None) -> None:
    """Wait for every rank (a no-op outside torchrun)."""
    import torch.distributed as dist

    if ctx is not None and dist.is_initialized():
        dist.barrier()


@contextmanager
def data_parallel(model: nn.Module, ctx: DistContext) -> Iterator[nn.Module]:
    """``model.net`` wrapped in DDP for the block, unwrapped after (the state dict keys come back).

    Score and projection models compute everything through ``self.net``, so the training losses
    call DDP's forward, which its gradient all-reduce needs, without knowing about DDP.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    inner = model.net
    if not isinstance(inner, nn.Module):
        raise TypeError("data-parallel training needs a model with a .net module")
    ids = [ctx.local_rank] if ctx.backend == "nccl" else None
    model.net = DDP(inner, device_ids=ids)
    try:
        yield model.net
    finally:
        model.net = inner
        # DDP's reducer sits in reference cycles: free it now, while the process group still exists
        gc.collect()


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when ``flag`` is true on any (an all-reduce of one number)."""
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def ddp_optimise(
    optimise: Callable[..., dict],
    model: nn.Module,
    loss_fn: Callable[[torch.Generator], torch.Tensor],
    cfg,
    progress: Callable[[int, int, float], None] | None,
    should_stop: Callable[[], bool] | None,
    params: list[nn.Parameter] | None,
    ctx: DistContext,
) -> dict:
    """:func:`geoflow.train.optimise` on every rank of a data-parallel job (see the module doc).

    Returns the loop's summary with ``world_size`` and ``global_batch`` added; ``loss`` is rank
    0's running loss on its own shard of the batch.
    """
    stop = None
    if should_stop is not None:
        # every rank must stop at the same step, or the others wait in the next all-reduce
        def stop() -> bool:
            return any_rank(should_stop(), ctx)

    rank_cfg = dataclasses.replace(cfg, seed=rank_seed(cfg.seed, ctx.rank), device=ctx.device)
    with data_parallel(model, ctx):
        out = optimise(model, loss_fn, rank_cfg, progress if ctx.is_main else None, stop, params)
    return {**out, "world_size": ctx.world_size, "global_batch": ctx.global_batch(cfg.batch_size)}
