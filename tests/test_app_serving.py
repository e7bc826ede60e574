"""Serving many sessions (issue 9): behaviour, not timing (timings live in benchmarks/app.py).

- a revisited setting is served from the shared cache without running the sampler;
- two sessions with different settings never see each other's runs; the same settings share one run;
- the queues serve every caller, first come first served, never more at once than their slots;
- the byte-budgeted cache evicts by bytes, computes a key once for concurrent callers, hands out
  read-only arrays; the prefetcher fills it while idle and gives way to interactive work.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from app_charts import chart_specs

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app" / "streamlit_app.py")
if str(ROOT / "app") not in sys.path:
    sys.path.insert(0, str(ROOT / "app"))

import cache  # noqa: E402
import serving  # noqa: E402
import training  # noqa: E402

import geoflow.run as run_api  # noqa: E402

pytestmark = pytest.mark.xdist_group("app")  # AppTest shares the process-wide caches


@pytest.fixture
def counted(monkeypatch):
    """Count geoflow.run.run calls by thread (the app calls it through the module attribute)."""
    calls: list[tuple[str, int]] = []
    real = run_api.run

    def counting(spec, **kw):
        calls.append((threading.current_thread().name, spec.steps))
        return real(spec, **kw)

    monkeypatch.setattr(run_api, "run", counting)
    cache.clear()
    yield calls
    cache.clear()


def flows(params: dict, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = str(v)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def title(at: AppTest) -> str:

    spec = chart_specs(at)[0]
    return spec["layout"]["title"]["text"]


def first_particles(at: AppTest) -> np.ndarray:
    import base64

    spec = chart_specs(at)[0]
    tr = spec["frames"][-1]["data"][-1]
    xs = [np.frombuffer(base64.b64decode(tr[c]["bdata"]), dtype="<f4") for c in ("x", "y")]
    return np.stack(xs, 1)


def test_revisit_is_served_from_cache_without_the_sampler(counted, monkeypatch):
    monkeypatch.setattr(cache.PREFETCH, "enabled", False)
    with cache.PREFETCH._cv:  # work another test queued before prefetch was switched off
        cache.PREFETCH._tasks.clear()

    def page_runs() -> list[int]:
        # the pages' own sampler runs (a background prefetch still finishing runs on its own thread)
        return [s for thread, s in counted if thread != "geoflow-prefetch"]

    at = flows({"steps": 6, "n": 100})
    assert "N=6," in title(at)
    at.session_state["flows.steps"] = 5
    at.run()
    assert "N=5," in title(at)
    assert page_runs() == [6, 5]
    hits = cache.RUNS.stats.hits
    at.session_state["flows.steps"] = 6  # back to a setting already computed
    at.run()
    assert not at.exception
    assert "N=6," in title(at)
    assert page_runs() == [6, 5], "the sampler ran again for a revisited setting"
    assert cache.RUNS.stats.hits > hits
    # a new session with the same settings shares the computed run (process-wide cache)
    other = flows({"steps": 5, "n": 100})
    assert "N=5," in title(other) and page_runs() == [6, 5]


def test_sessions_with_the_same_view_share_one_built_figure(counted, monkeypatch):
    """A class following the teacher: the figure is built and serialised once, not per session."""
    import geoflow.animation as animation

    monkeypatch.setattr(cache.PREFETCH, "enabled", False)
    builds = []
    real = animation.flow_animation

    def counting(*a, **k):
        builds.append(1)
        return real(*a, **k)

    monkeypatch.setattr(animation, "flow_animation", counting)
    a = flows({"steps": 4, "n": 80, "seed": 3})
    b = flows({"steps": 4, "n": 80, "seed": 3})
    assert len(builds) == 1
    assert chart_specs(a) == chart_specs(b)
    c = flows({"steps": 4, "n": 80, "seed": 4})  # another view: its own figure
    assert len(builds) == 2 and "N=4," in title(c)
    assert chart_specs(c) != chart_specs(a)


def test_the_images_page_revisit_is_served_from_cache(counted):
    if not run_api.pretrained_available("digits-vp"):
        pytest.skip("needs the shipped digits-vp model")
    for _ in range(2):
        at = AppTest.from_file(APP, default_timeout=300)
        at.query_params["img_steps"] = "3"
        at.query_params["img_n"] = "16"
        at.switch_page("views/images.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    assert [s for _, s in counted] == [3]  # the second session's page did not sample again


def test_idle_prefetch_computes_the_next_step_count(counted, monkeypatch):
    monkeypatch.setattr(cache.PREFETCH, "enabled", True)
    monkeypatch.setattr(cache.PREFETCH, "idle_s", 0.0)
    quality: list[tuple[str, int]] = []  # final-quality numbers (exact W2) computed, by thread
    real_quality = cache.overlays.final_quality

    def counting_quality(spec, *a, **kw):
        quality.append((threading.current_thread().name, spec.steps))
        return real_quality(spec, *a, **kw)

    monkeypatch.setattr(cache.overlays, "final_quality", counting_quality)
    at = flows({"steps": 8, "n": 100})
    deadline = time.time() + 60
    while time.time() < deadline:  # the background thread computes 9 and 7 (then the toggle, 10)
        done = {s for name, s in quality if name == "geoflow-prefetch"}
        if {7, 9} <= done and cache.PREFETCH.pending() == 0:
            break
        time.sleep(0.1)
    assert {7, 9} <= {s for name, s in counted if name == "geoflow-prefetch"}, counted
    assert {7, 9} <= {s for name, s in quality if name == "geoflow-prefetch"}, quality  # and their numbers
    foreground = [s for name, s in counted if name != "geoflow-prefetch"]
    foreground_quality = [s for name, s in quality if name != "geoflow-prefetch"]
    hits = cache.RUNS.stats.prefetched_hits
    at.session_state["flows.steps"] = 9
    at.run()
    assert not at.exception and "N=9," in title(at)
    assert [s for name, s in counted if name != "geoflow-prefetch"] == foreground  # no foreground run
    assert [s for name, s in quality if name != "geoflow-prefetch"] == foreground_quality  # nor its W2
    assert cache.RUNS.stats.prefetched_hits > hits


def test_two_sessions_never_see_each_others_runs(counted, monkeypatch):
    monkeypatch.setattr(cache.PREFETCH, "enabled", False)
    a = flows({"steps": 7, "n": 100, "seed": 1})
    b = flows({"steps": 4, "n": 100, "seed": 2})
    pa, pb = first_particles(a), first_particles(b)
    for _ in range(2):  # interleaved reruns: each keeps its own run
        a.session_state["flows.steps"] = 6
        a.run()
        b.session_state["flows.steps"] = 3
        b.run()
        assert "N=6," in title(a) and "N=3," in title(b)
        assert any("seed 1" in c.value for c in a.caption)
        assert any("seed 2" in c.value for c in b.caption)
        assert not any("seed 1" in c.value for c in b.caption)
        a.session_state["flows.steps"] = 7
        a.run()
        b.session_state["flows.steps"] = 4
        b.run()
        np.testing.assert_array_equal(first_particles(a), pa)
        np.testing.assert_array_equal(first_particles(b), pb)
    assert not np.allclose(pa, pb)


def test_a_sessions_own_density_is_not_offered_to_another_session():
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["data_source"] = "type"
    at.switch_page("views/train.py")
    at.run()
    pts = np.random.default_rng(0).normal(size=(30, 2))
    at.text_area(key="points_text").set_value("\n".join(f"{x},{y}" for x, y in pts))
    at.button(key="text_go").click().run()
    assert not at.exception and "my_data" in at.session_state["user_densities"]
    other = flows({"steps": 3, "n": 60, "density": "mine: my_data"})  # a link naming A's density
    (box,) = [s for s in other.sidebar.selectbox if s.key == "flows.density"]
    assert not any(o.startswith("mine: ") for o in box.options)
    assert box.value == "eight_gaussians"
    assert any(
        "mine: my_data" in w.value and "using density='eight_gaussians'" in w.value for w in other.warning
    )


# --------------------------------------------------------------------------- the pieces
def test_work_queue_serves_every_caller_in_order_within_its_slots():
    q = serving.WorkQueue(2, poll=0.01)
    running, peak, order, waits = [0], [0], [], {}
    lock = threading.Lock()

    def job(i: int) -> None:
        with q.slot(lambda ahead, i=i: waits.setdefault(i, []).append(ahead)):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                order.append(i)
            time.sleep(0.03)
            with lock:
                running[0] -= 1

    threads = []
    for i in range(10):
        t = threading.Thread(target=job, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.005)  # arrival order 0, 1, 2, ...
    for t in threads:
        t.join(10)
    assert sorted(order) == list(range(10)) and q.served == 10
    assert peak[0] <= 2
    assert order == list(range(10))  # first come, first served
    assert any(w and w[0] > 0 for w in waits.values())  # later callers were told their place
    assert not q.busy()


def test_a_caller_that_gives_up_leaves_the_queue():
    q = serving.WorkQueue(1, poll=0.01, poll_calls=True)
    release = threading.Event()

    def holder() -> None:
        with q.slot():
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    time.sleep(0.05)

    class Gone(Exception):
        pass

    def give_up(ahead: int) -> None:
        raise Gone

    with pytest.raises(Gone), q.slot(give_up):
        pass
    assert q.waiting == 0
    release.set()
    t.join(5)
    with q.slot():  # the queue still works
        pass


def test_byte_cache_evicts_by_bytes_and_computes_once():
    lru = serving.ByteLRU(budget=3000)
    for i in range(5):
        lru.put(i, np.zeros(100, np.float64))  # 800 bytes each
    assert lru.bytes <= 3000 and len(lru) == 3 and 0 not in lru and 4 in lru
    lru.put("huge", np.zeros(1000, np.float64))  # larger than the budget: returned, never stored
    assert "huge" not in lru and lru.stats.too_large == 1

    calls = []
    gate = threading.Event()

    def slow():
        calls.append(1)
        gate.wait(5)
        return {"x": np.ones(10, np.float32)}

    out = []
    threads = [threading.Thread(target=lambda: out.append(lru.get_or_compute("k", slow))) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1 and len(out) == 6
    assert {how for _, how in out} == {"miss", "shared"}
    value = out[0][0]
    assert all(v is value for v, _ in out)  # one shared object
    with pytest.raises(ValueError):
        value["x"][0] = 2.0  # read-only: no session can change another's run


def test_cached_trajectories_are_read_only_and_counted_by_bytes():
    spec = run_api.RunSpec(data="eight_gaussians", steps=3, n=50, score="exact")
    traj = serving.freeze(run_api.run(spec))
    assert serving.nbytes(traj) == traj.nbytes() > 0
    assert not traj.paths.flags.writeable and not traj.final.flags.writeable


def test_prefetch_gives_way_to_interactive_work():
    lru = serving.ByteLRU(1 << 20)
    q = serving.WorkQueue(1)
    pf = serving.Prefetcher(lru, q, idle_s=0.0)
    started, steps = threading.Event(), [0]
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class FakeSource:
        score_fn: object

    src = serving.preemptible(FakeSource(lambda x, t: x), pf.busy)

    def compute():
        started.set()
        for _ in range(10_000):
            src.score_fn(0, 0)
            steps[0] += 1
            time.sleep(0.001)
        return np.zeros(3)

    pf.submit("session", [("key", compute)])
    assert started.wait(10)
    with q.slot():  # interactive work arrives: the background run stops at its next score call
        time.sleep(0.1)
        n = steps[0]
        time.sleep(0.1)
        assert steps[0] - n <= 1
    deadline = time.time() + 10
    while pf.abandoned == 0 and time.time() < deadline:
        time.sleep(0.01)
    assert pf.abandoned >= 1
    pf.shutdown()


def test_training_queue_serves_every_session(monkeypatch):
    """More trainings than slots: the later ones say "queued" and all of them finish."""
    monkeypatch.setattr(training, "SLOTS", serving.WorkQueue(1, "trainings", poll=0.02, poll_calls=True))
    pts = np.random.default_rng(0).normal(size=(100, 2))
    jobs = [training.Job(f"d{i}", 40, with_projection=False) for i in range(3)]
    phases: list[str] = []
    threads = [threading.Thread(target=training.run_job, args=(j, pts, "vp", 16)) for j in jobs]
    for t in threads:
        t.start()
        time.sleep(0.02)
    deadline = time.time() + 120
    while not all(j.done for j in jobs) and time.time() < deadline:
        for j in jobs:
            training.touch(j)
            phases.append(j.phase)
        time.sleep(0.01)
    for t in threads:
        t.join(10)
    assert all(j.done and not j.error and j.result is not None for j in jobs), [j.error for j in jobs]
    assert any(re.match(r"queued: \d training", p) for p in phases)
    assert not training.SLOTS.busy()


FREEZE_CHILD = """
import gc, sys
sys.path.insert(0, sys.argv[1])
from streamlit.testing.v1 import AppTest
import cache
import serving
assert gc.get_freeze_count() == 0
at = AppTest.from_file(sys.argv[2], default_timeout=120)
at.query_params["steps"] = "5"
at.query_params["n"] = "50"
at.run()
assert not at.exception, at.exception
frozen = gc.get_freeze_count()
gc.collect(2)
keys = list(cache.RUNS._data)
figures = sum(1 for k in keys if k[0] == "figure")
print(len(keys) - figures, figures, frozen, len(gc.get_objects()), serving.freeze_startup_heap())
"""


def test_first_run_freezes_the_imported_heap_so_the_gc_after_each_rerun_skips_it():
    """Streamlit's full GC after each rerun walks only what was made since the first run."""
    out = subprocess.run(
        [sys.executable, "-c", FREEZE_CHILD, str(ROOT / "app"), APP],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs, figures, frozen, tracked, again = (int(v) for v in out.stdout.split()[-5:])
    assert runs >= 1 and figures == 0  # the first page's figure (a cycle) was dropped, not frozen
    assert frozen > 100_000  # torch, plotly, streamlit, POT, sklearn: module objects for good
    assert tracked < frozen / 3  # a full collection now walks a small part of the heap
    assert again == 0  # once per process


def test_drop_where_removes_only_the_matching_entries_and_their_bytes():
    lru = serving.ByteLRU(1000)
    lru.put(("figure", 1), "a", size=100)
    lru.put(("run", 1), "b", size=200)
    lru.put(("figure", 2), "c", size=300)
    assert lru.drop_where(lambda k: k[0] == "figure") == 2
    assert list(lru._data) == [("run", 1)] and lru.bytes == 200
