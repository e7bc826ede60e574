"""Serving a classroom from one small server: a byte-budgeted run cache, fair queues, idle prefetch.

No widgets here (tests drive these classes directly); :mod:`cache` wires them to the pages.

- :class:`ByteLRU`: runs shared by every session of the process (same key, same object), evicted
  least-recently-used by *bytes* (``Trajectory.nbytes()``), not by entry count, so the worst mix
  of settings cannot grow the server past its budget. A key being computed by one session is
  waited for by the others (computed once). Values are frozen (read-only arrays): no copy per hit,
  and no session can change another's run.
- :class:`WorkQueue`: first come, first served admission to a few concurrent computations, so 20
  sessions on 2 cores queue instead of thrashing; a waiting caller learns its place ("queued").
- :class:`Prefetcher`: one background thread that computes the neighbouring settings of a view
  (the next step counts, the projection toggle) only while the interactive queue is empty, and
  abandons a run the moment interactive work arrives (checked at every score evaluation).
"""

from __future__ import annotations

import gc
import importlib
import os
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

_THREADS_SET = False
_HEAP_FROZEN = False
# what the pages import, some of it lazily: loaded before the heap is frozen so that their module
# objects are frozen too (an import after the freeze would bring the full collections back)
PAGE_MODULES = (
    "geoflow.animation",
    "geoflow.export",
    "geoflow.images",
    "geoflow.jko",
    "geoflow.metrics",
    "geoflow.overlays",
    "geoflow.train",
    "geoflow.wgf",
    "ot",
    "plotly.graph_objects",
    "plotly.io",
    "plotly.subplots",
    "scipy.spatial",
    "sklearn.datasets",
    "sklearn.model_selection",
    "PIL.Image",
)
# cached arrays are read-only on purpose (shared by every session); torch.as_tensor of one warns that
# writing through the tensor would be undefined, and nothing writes through it
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


def set_server_threads() -> int:
    """Set torch's intra-op thread count once per process (``GEOFLOW_TORCH_THREADS``, default 1).

    One thread per computation: sessions run in parallel threads on the few cores, and a second
    intra-op thread per run only oversubscribes them (measured in benchmarks/RESULTS.md, app).
    """
    global _THREADS_SET
    if not _THREADS_SET:
        torch.set_num_threads(max(1, int(os.environ.get("GEOFLOW_TORCH_THREADS", "1"))))
        _THREADS_SET = True
    return torch.get_num_threads()


def freeze_startup_heap(release: Callable[[], None] | None = None) -> int:
    """Import the pages' modules and move every object alive now out of the cyclic GC, once per process.

    Streamlit runs ``gc.collect(2)`` after every script run (``runner.postScriptGC``). A full
    collection walks every tracked object, and the imported torch, plotly, sklearn and POT alone
    are about 330k of them: 150-300 ms per rerun on this 2-core machine, holding the GIL, so the
    next widget change and the chart's websocket write wait for it (benchmarks/RESULTS.md, app).
    Module-level objects live as long as the process anyway; ``gc.freeze`` keeps them out of every
    later collection, and the runs, figures and sessions made afterwards are still collected.
    Anything alive at the freeze is never collected as a cycle again, so ``release`` first lets go
    of the first page's figures (a plotly figure is a reference cycle, tens of MB for the largest
    settings; its runs are plain arrays, freed by reference counting whenever they are evicted);
    that page's next rerun builds its figure again, once per process.

    Args:
        release: called before the collection, to drop caches (None: nothing to drop).

    Returns:
        The number of objects frozen (0 on every call after the first).
    """
    global _HEAP_FROZEN
    if _HEAP_FROZEN or os.environ.get("GEOFLOW_GC_FREEZE", "1") == "0":  # "0": off, for a benchmark's A/B
        return 0
    for name in PAGE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional extra that is not installed: its page says so itself
            pass
    if release is not None:
        release()
    gc.collect()
    gc.freeze()
    _HEAP_FROZEN = True
    return gc.get_freeze_count()


def freeze(value: Any) -> Any:
    """Make the numpy arrays of a cached value read-only (recursively through dataclasses, dicts, lists)."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, dict):
        for v in value.values():
            freeze(v)
    elif isinstance(value, list | tuple):
        for v in value:
            freeze(v)
    elif hasattr(value, "__dataclass_fields__"):
        for f in fields(value):
            freeze(getattr(value, f.name))
    return value


def nbytes(value: Any) -> int:
    """Bytes held by a value's arrays (``nbytes()`` where the value defines it)."""
    if hasattr(value, "nbytes") and callable(value.nbytes):
        return int(value.nbytes())
    if isinstance(value, np.ndarray | torch.Tensor):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values()) + 64 * len(value)
    if isinstance(value, list | tuple):
        return sum(nbytes(v) for v in value) + 8 * len(value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, f.name)) for f in fields(value))
    return 64


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    shared: int = 0  # waited for another caller's computation of the same key
    prefetched_hits: int = 0
    evictions: int = 0
    too_large: int = 0


class ByteLRU:
    """A thread-safe LRU of computed values, bounded by total bytes.

    Args:
        budget: total bytes of the stored values; a value larger than the budget is returned
            but not stored.
    """

    def __init__(self, budget: int) -> None:
        self.budget = int(budget)
        self._data: OrderedDict[Hashable, tuple[Any, int, bool]] = OrderedDict()  # value, bytes, prefetched
        self._inflight: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0

    def drop_where(self, pred: Callable[[Hashable], bool]) -> int:
        """Remove the entries whose key satisfies ``pred``; returns how many went."""
        with self._lock:
            keys = [k for k in self._data if pred(k)]
            for k in keys:
                self.bytes -= self._data.pop(k)[1]
            return len(keys)

    def peek(self, key: Hashable) -> Any | None:
        """The stored value (marks it recently used), or None."""
        with self._lock:
            got = self._data.get(key)
            if got is None:
                return None
            self._data.move_to_end(key)
            if got[2]:  # first use of a prefetched value
                self.stats.prefetched_hits += 1
                self._data[key] = (got[0], got[1], False)
            self.stats.hits += 1
            return got[0]

    def put(self, key: Hashable, value: Any, size: int | None = None, prefetched: bool = False) -> None:
        size = nbytes(value) if size is None else int(size)
        with self._lock:
            if size > self.budget:
                self.stats.too_large += 1
                return
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._data[key] = (value, size, prefetched)
            self.bytes += size
            while self.bytes > self.budget and self._data:
                _, (_, s, _) = self._data.popitem(last=False)
                self.bytes -= s
                self.stats.evictions += 1

    def computing(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._inflight

    def get_or_compute(
        self,
        key: Hashable,
        compute: Callable[[], Any],
        *,
        prefetched: bool = False,
        admit: Callable[[], Any] | None = None,
        size: Callable[[Any], int] | None = None,
    ) -> tuple[Any, str]:
        """The value of ``key``: stored, being computed by another caller (waited for), or computed.

        Args:
            compute: makes the value (its arrays are frozen before it is shared).
            prefetched: the caller is the background prefetcher (counts the later first hit).
            admit: a context manager factory (a :class:`WorkQueue` slot) entered around ``compute``.
            size: the value's bytes (default :func:`nbytes`).

        Returns:
            ``(value, how)`` with how ``hit``, ``shared`` or ``miss``.
        """
        while True:
            value = self.peek(key)
            if value is not None:
                return value, "hit"
            with self._lock:
                event = self._inflight.get(key)
                mine = event is None
                if mine:
                    event = self._inflight[key] = threading.Event()
            if not mine:
                event.wait()
                value = self.peek(key)
                if value is not None:
                    with self._lock:
                        self.stats.shared += 1
                    return value, "shared"
                continue  # the other computation failed or was abandoned: compute it here
            try:
                if admit is not None:
                    with admit():
                        value = freeze(compute())
                else:
                    value = freeze(compute())
                self.put(key, value, None if size is None else size(value), prefetched=prefetched)
                with self._lock:
                    self.stats.misses += 1
                return value, "miss"
            finally:
                with self._lock:
                    self._inflight.pop(key, None)
                event.set()


class WorkQueue:
    """First come, first served admission to at most ``slots`` concurrent computations.

    ``with queue.slot(on_wait): ...`` blocks until this caller's turn; while it waits,
    ``on_wait(ahead)`` is called with the number of callers ahead of it (when that changes, or
    every ``poll`` seconds with ``poll_calls``), so a page can say "queued" instead of freezing. An
    exception raised by ``on_wait`` (or while waiting) gives up the place in the queue.
    """

    def __init__(self, slots: int, name: str = "work", poll: float = 0.25, poll_calls: bool = False) -> None:
        self.slots = max(1, int(slots))
        self.name = name
        self.poll = poll
        self.poll_calls = poll_calls  # call on_wait at every poll, not only when the place changes
        self._cv = threading.Condition()
        self._waiting: deque[int] = deque()
        self._next = 0
        self.active = 0
        self.served = 0
        self.last_done = 0.0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def busy(self) -> bool:
        """Anyone running or waiting."""
        return self.active > 0 or bool(self._waiting)

    def idle_for(self) -> float:
        """Seconds since the queue last had work (0 while busy)."""
        return 0.0 if self.busy() else time.monotonic() - self.last_done

    def ahead_of(self, ticket: int) -> int:
        with self._cv:
            return list(self._waiting).index(ticket) if ticket in self._waiting else 0

    @contextmanager
    def slot(self, on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        with self._cv:
            ticket = self._next
            self._next += 1
            self._waiting.append(ticket)
            told = -1
            try:
                while not (self._waiting[0] == ticket and self.active < self.slots):
                    ahead = list(self._waiting).index(ticket) + max(0, self.active - self.slots + 1)
                    if on_wait is not None and (ahead != told or self.poll_calls):
                        told = ahead
                        self._cv.release()
                        try:  # a caller may give up (raise) while it waits
                            on_wait(ahead)
                        finally:
                            self._cv.acquire()
                    self._cv.wait(self.poll)
            except BaseException:  # the caller gave up (its session ended, the script was stopped)
                self._waiting.remove(ticket)
                self._cv.notify_all()
                raise
            self._waiting.popleft()
            self.active += 1
            self._cv.notify_all()
        try:
            yield
        finally:
            with self._cv:
                self.active -= 1
                self.served += 1
                self.last_done = time.monotonic()
                self._cv.notify_all()


class Skipped(Exception):
    """A prefetch task found nothing to do (what it derives from is not there): neither done nor failed."""


class Preempted(Exception):
    """A background computation gave way to interactive work."""


def preemptible(source: Any, should_yield: Callable[[], bool]) -> Any:
    """A copy of a ScoreSource whose score raises :class:`Preempted` once ``should_yield()`` is true.

    Checked at every score evaluation (about a millisecond at 1000 particles), so a background run
    gives its core back within one network call. The values are those of the original score.
    """
    fn = source.score_fn

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if should_yield():
            raise Preempted
        return fn(x, t)

    return replace(source, score_fn=score)


@dataclass
class _Task:
    owner: str
    gen: int
    key: Hashable
    compute: Callable[[], Any]
    tries: int = 0


@dataclass
class Prefetcher:
    """Computes likely next settings in one background thread, only while the server is idle.

    Attributes:
        cache: where results go (keys the pages look up).
        interactive: the queue whose activity means "not idle" (prefetch yields to it at once).
        others: more "busy" signals (heavy work, training): prefetch waits while any is true.
        idle_s: the interactive queue must have been empty this long before a prefetch starts.
        max_pending: a bound on queued tasks (a new view replaces its session's older ones).
    """

    cache: ByteLRU
    interactive: WorkQueue
    others: list[Callable[[], bool]] = field(default_factory=list)
    idle_s: float = 0.05
    max_pending: int = 16
    enabled: bool = True
    done: int = 0
    abandoned: int = 0
    failed: int = 0
    _tasks: deque = field(default_factory=deque)
    _gen: dict = field(default_factory=dict)
    _cv: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    stopping: bool = False

    def busy(self) -> bool:
        return self.stopping or self.interactive.busy() or any(f() for f in self.others)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the worker (its run in flight gives way at its next score evaluation) and join it.

        Registered with ``atexit``: a daemon thread killed inside torch at interpreter exit aborts
        the process ("terminate called without an active exception").
        """
        self.stopping = True
        with self._cv:
            self._tasks.clear()
            self._cv.notify_all()
        t = self._thread
        if t is not None and t.is_alive():
            t.join(timeout)

    def submit(self, owner: str, tasks: list[tuple[Hashable, Callable[[], Any]]]) -> int:
        """Queue ``tasks`` for ``owner`` (a session), replacing that owner's pending ones."""
        if not self.enabled or self.stopping:
            return 0
        with self._cv:
            gen = self._gen[owner] = self._gen.get(owner, 0) + 1
            while len(self._gen) > 4 * self.max_pending:  # forget the oldest owners
                self._gen.pop(next(iter(self._gen)))
            kept = deque(t for t in self._tasks if t.owner != owner)
            new = [
                _Task(owner, gen, k, fn)
                for k, fn in tasks
                if k not in self.cache and not self.cache.computing(k)
            ]
            kept.extend(new)
            while len(kept) > self.max_pending:
                kept.popleft()
            self._tasks = kept
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="geoflow-prefetch", daemon=True)
                self._thread.start()
            self._cv.notify_all()
            return len(new)

    def pending(self) -> int:
        return len(self._tasks)

    def _wait_idle(self) -> None:
        while not self.stopping and (self.busy() or self.interactive.idle_for() < self.idle_s):
            time.sleep(0.02)

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._tasks:
                    if self.stopping or not self._cv.wait(30.0):
                        self._thread = None
                        return
                task = self._tasks.popleft()
            self._wait_idle()
            if self.stopping:
                return
            if task.key in self.cache:
                continue
            try:
                self.cache.get_or_compute(task.key, task.compute, prefetched=True)
                self.done += 1
            except Skipped:
                continue
            except Preempted:
                self.abandoned += 1
                task.tries += 1
                with self._cv:  # try again once the server is idle, unless the view moved on
                    if task.tries < 3 and self._gen.get(task.owner) == task.gen:
                        self._tasks.appendleft(task)
            except Exception:  # noqa: BLE001 - a background guess must never take the server down
                self.failed += 1
