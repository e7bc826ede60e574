"""Training helpers of the Train your own page (no widgets here, so tests can call them directly).

A training run is a :class:`Job` driven by :func:`run_job` in a background thread: the thread only writes
progress into the job; the page reads it from a fragment that reruns once a second, so the page stays
responsive and other sessions are not blocked.

- At most ``MAX_CONCURRENT_JOBS`` trainings run at once; later ones wait in a first-come-first-served
  queue (at most ``MAX_QUEUED_JOBS``) and the page says "queued" with the place in line.
- A training gives way to interactive work: while a sampler run of any session is in flight, each
  training step waits up to ``YIELD_S`` (so step changes stay live, and training still progresses).
- A training whose session has ended stops within ``SESSION_GRACE_S`` (plus one step) and frees its
  slot: Streamlit's runtime says whether the session is still connected; without a runtime (tests,
  bare mode) the page's poller refreshes a heartbeat, and a job older than ``HEARTBEAT_S`` stops.

Also the text helpers of uploads: :func:`decode_text` (UTF-8, UTF-16/32 with or without a byte-order
mark, Windows-1252 / Latin-1; binary refused) and :func:`parse_mixture_text` (a JSON mixture spec).
"""

from __future__ import annotations

import codecs
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import serving
import torch

from geoflow.densities import GaussianMixture, mixture_from_spec, read_points_csv

MAX_TRAIN_STEPS = 20_000  # about 2-3 minutes on one CPU thread
MAX_CONCURRENT_JOBS = 2  # per process: a small shared CPU serves every session
MAX_QUEUED_JOBS = 6  # waiting behind them; more are refused with a message
SESSION_GRACE_S = 10.0  # a disconnected session may reconnect within this before its training stops
HEARTBEAT_S = 30.0  # without a Streamlit runtime: the poller's heartbeat must be younger than this
YIELD_S = 0.05  # the longest a training step waits for interactive work
LIVENESS_EVERY_S = 1.0  # how often a training checks that its session is still there
MAX_SPEC_CHARS = 200_000  # a JSON mixture spec, typed or uploaded
MIXTURE_TRAIN_POINTS = 5000  # a JSON mixture is trained on this many of its samples
GENERATORS = ("moons", "circles", "blobs", "swiss roll (2-D)", "s-curve (2-D)")
NAME_MAX = 30
_NAME_OK = re.compile(r"[^\w .\-]+", re.UNICODE)  # letters, digits, _, space, dot, hyphen


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


def safe_name(name: str) -> tuple[str, str]:
    """A density name that reads the same everywhere (Markdown, chart titles), and a note if it changed.

    Letters (any script), digits, ``_``, space, ``.`` and ``-`` are kept; every other character (the
    ones Markdown or HTML would read as formatting: ``[ ] ( ) < > * ` : $ ...``) becomes ``_``.
    """
    raw = " ".join(str(name).split())[:NAME_MAX]
    clean = _NAME_OK.sub("_", raw).strip(" ._-") or "my_data"
    note = "" if clean == raw else f"density name {raw!r} has characters read as formatting; using {clean!r}"
    return clean, note


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(raw: bytes, what: str = "the file") -> tuple[str, str]:
    """Decode uploaded text: ``(text, encoding)``.

    A byte-order mark names the encoding; otherwise UTF-16 without a mark (every other byte NUL),
    then UTF-8, then Windows-1252 (Latin-1 where 1252 has holes). A file with other NUL bytes or
    many control characters is refused as not text.

    Raises:
        ValueError: naming the file, for binary content.
    """
    for bom, enc in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(enc), enc.replace("-sig", "")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{what} starts with a {enc} byte-order mark but is not {enc} text ({e.reason})"
                ) from None
    text, enc = "", ""
    if len(raw) >= 4 and len(raw) % 2 == 0 and b"\x00" in raw:  # UTF-16 without a mark: NUL every other byte
        even, odd = raw[0::2].count(0), raw[1::2].count(0)
        for zeros, codec in ((odd, "utf-16-le"), (even, "utf-16-be")):
            if zeros >= 0.9 * (len(raw) // 2):
                try:
                    text, enc = raw.decode(codec), "utf-16"
                    break
                except UnicodeDecodeError:
                    pass
    if not enc:
        try:
            text, enc = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
    if not enc:
        if b"\x00" in raw:
            raise ValueError(
                f"{what} is not a text file (it contains NUL bytes): upload a CSV or JSON text file"
            )
        try:
            text, enc = raw.decode("cp1252"), "windows-1252"
        except UnicodeDecodeError:
            text, enc = raw.decode("latin-1"), "latin-1"
    bad = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\r\n")
    if "\x00" in text or bad > max(8, len(text) // 100):
        raise ValueError(f"{what} is not a text file (control characters): upload a CSV or JSON text file")
    return text, enc


def parse_mixture_text(text: str, name: str) -> GaussianMixture:
    """A Gaussian mixture from a JSON spec ``{"weights": [...], "means": [[x, y], ...], "covs": [...]}``.

    The text is parsed here and handed over as a dict: a string is never taken for a file path.

    Raises:
        ValueError: not JSON (with line and column), not an object, too long or too deeply nested,
            or the library's own check of weights / means / covs.
    """
    if not text.strip():
        raise ValueError(
            'no JSON given: e.g. {"weights": [0.5, 0.5], "means": [[-2, 0], [2, 0]], '
            '"covs": [[[0.3, 0], [0, 0.3]], [[0.3, 0], [0, 0.3]]]}'
        )
    if len(text) > MAX_SPEC_CHARS:
        raise ValueError(f"the JSON spec has {len(text)} characters; at most {MAX_SPEC_CHARS}")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise ValueError("the JSON spec is nested too deeply") from None
    if not isinstance(spec, dict):
        raise ValueError(
            f"the JSON spec must be an object with weights, means and covs, not a {type(spec).__name__}"
        )
    try:
        return mixture_from_spec(spec, name=name)
    except (TypeError, KeyError, IndexError, OverflowError, RecursionError, AttributeError) as e:
        raise ValueError(f"the JSON spec does not describe a 2-D mixture ({type(e).__name__}: {e})") from None


def looks_like_json(name: str, text: str) -> bool:
    return name.lower().endswith(".json") or text.lstrip()[:1] in ("{", "[")


def training_points(density) -> np.ndarray:
    """The points a density is trained on: a point cloud's own, a mixture's fixed sample."""
    pts = getattr(density, "points", None)
    if pts is not None:
        return np.asarray(pts)
    g = torch.Generator().manual_seed(0)
    return density.sample(MIXTURE_TRAIN_POINTS, g).numpy().astype(np.float64)


# --------------------------------------------------------------------------- training job
@dataclass
class Job:
    """A background training run: the thread writes progress; the page only reads it.

    ``session_id`` is the Streamlit session that started it ('' outside a server); ``heartbeat``
    (monotonic seconds) is refreshed by the page's poller (:func:`touch`).
    """

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
    session_id: str = ""
    heartbeat: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    queued: int = 0  # trainings ahead of this one (0: running or done)
    gone: bool = False  # stopped because its session ended


SLOTS = serving.WorkQueue(MAX_CONCURRENT_JOBS, "trainings", poll=0.25, poll_calls=True)
_RUNNING: set[int] = set()


def active() -> bool:
    """Any training running or queued (the prefetcher counts it as "not idle")."""
    return SLOTS.busy()


def touch(job: Job | None) -> None:
    """The page's poller: this job's session is still here."""
    if job is not None:
        job.heartbeat = job.last_seen = time.monotonic()


def _runtime_says(session_id: str) -> bool | None:
    """Whether Streamlit's runtime has this session connected (None: no runtime to ask)."""
    if not session_id:
        return None
    try:
        from streamlit import runtime

        if not runtime.exists():
            return None
        return bool(runtime.get_instance().is_active_session(session_id))
    except Exception:  # noqa: BLE001 - an internal API: fall back to the heartbeat
        return None


def session_alive(job: Job, now: float | None = None) -> bool:
    """False once the job's session has been gone longer than the bound (see the module docstring)."""
    now = time.monotonic() if now is None else now
    connected = _runtime_says(job.session_id)
    if connected is None:
        return now - job.heartbeat <= HEARTBEAT_S
    if connected:
        job.last_seen = now
        return True
    return now - job.last_seen <= SESSION_GRACE_S


class _Gone(Exception):
    pass


def _current_session_id() -> str:
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        return ctx.session_id if ctx is not None else ""
    except Exception:  # noqa: BLE001
        return ""


def start_job(job: Job, points: np.ndarray, sde_name: str, width: int) -> threading.Thread:
    """Start :func:`run_job` in a daemon thread for this session (records the session id first)."""
    job.session_id = job.session_id or _current_session_id()
    touch(job)
    t = threading.Thread(
        target=run_job, args=(job, points, sde_name, width), daemon=True, name="geoflow-train"
    )
    t.start()
    return t


def _interactive_busy() -> Callable[[], bool]:
    try:
        import cache

        return cache.INTERACTIVE.busy
    except Exception:  # noqa: BLE001 - outside the app
        return lambda: False


def run_job(job: Job, points: np.ndarray, sde_name: str, width: int) -> None:
    """Train (in a thread) a score model and, optionally, its projection network.

    Waits for a training slot first (``job.phase`` says "queued"); stops early, keeping nothing,
    when the session that started it has ended.
    """
    if SLOTS.waiting >= MAX_QUEUED_JOBS:
        job.error = (
            f"the server's training queue is full ({MAX_CONCURRENT_JOBS} running, {SLOTS.waiting} waiting); "
            "try again in a minute"
        )
        job.done = True
        return

    def on_wait(ahead: int) -> None:
        job.queued = max(1, ahead)  # trainings that must finish (or leave the line) before this one
        job.phase = f"queued: {job.queued} training{'s' if job.queued > 1 else ''} ahead of yours"
        if job.stop.is_set() or not session_alive(job):
            raise _Gone

    busy = _interactive_busy()
    checked = [time.monotonic()]

    def should_stop() -> bool:
        if job.stop.is_set():
            return True
        now = time.monotonic()
        if now - checked[0] >= LIVENESS_EVERY_S:
            checked[0] = now
            if not session_alive(job, now):
                job.gone = True
                job.stop.set()
                return True
        waited = 0.0
        while busy() and waited < YIELD_S:  # interactive work first: step changes stay live
            time.sleep(0.005)
            waited += 0.005
        return False

    try:
        with SLOTS.slot(on_wait):
            job.queued = 0
            job.phase = "starting"
            _RUNNING.add(id(job))
            try:
                _train(job, points, sde_name, width, should_stop)
            finally:
                _RUNNING.discard(id(job))
    except _Gone:
        job.gone = not job.stop.is_set()
        job.error = "stopped before it started: its session ended" if job.gone else "stopped while queued"
    except (ValueError, RuntimeError) as e:
        job.error = str(e)
    finally:
        if job.gone:
            job.result = None
            job.error = job.error or "stopped: the session that started this training has ended"
        job.done = True
        _log_end(job)


def _log_end(job: Job) -> None:
    """One line in the server's timing log (benchmarks read when a training ended, and why)."""
    try:
        import cache

        cache.log_timing(
            what="training end",
            gone=job.gone,
            error=job.error,
            progress=job.progress,
            seen_ago_s=time.monotonic() - job.last_seen,
        )
    except Exception:  # noqa: BLE001 - outside the app
        pass


def _train(job: Job, points: np.ndarray, sde_name: str, width: int, should_stop: Callable[[], bool]) -> None:
    from geoflow.sde import make_sde
    from geoflow.train import (
        TrainConfig,
        data_fn_from_tensor,
        make_score_model_2d,
        train_projection,
        train_score,
    )

    data = torch.as_tensor(points, dtype=torch.float32)
    model = make_score_model_2d(make_sde(sde_name), float(data.std()), width=width, meta={"data": job.name})

    def prog(phase: str, share: float, offset: float):
        def f(step: int, total: int, loss: float) -> None:
            job.phase, job.loss = phase, loss
            job.progress = offset + share * step / total

        return f

    share = 0.75 if job.with_projection else 1.0
    cfg = TrainConfig(steps=job.steps, batch_size=256, lr=2e-3, seed=0)
    job.phase = "score network"
    summary = train_score(
        model, data_fn_from_tensor(data), cfg, prog("score network", share, 0.0), should_stop
    )
    proj = None
    if job.with_projection and not job.stop.is_set():
        job.phase = "projection network"
        pcfg = TrainConfig(steps=max(200, job.steps // 3), batch_size=256, lr=1e-3, seed=1)
        proj = train_projection(
            model,
            data_fn_from_tensor(data),
            pcfg,
            progress=prog("projection", 0.25, 0.75),
            should_stop=should_stop,
            score_name=job.name,
        )
    if job.gone:
        return
    job.result = {"model": model, "projection": proj, "id": uuid.uuid4().hex[:12], "summary": summary}
    job.progress = 1.0


def model_bytes(model: torch.nn.Module) -> bytes:
    """The model as safetensors bytes with its config in the metadata (loadable by geoflow.checkpoints)."""
    from safetensors.torch import save

    from geoflow.checkpoints import META_KEY

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save(state, metadata={META_KEY: json.dumps(model.config())})
