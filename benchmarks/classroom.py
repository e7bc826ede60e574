"""Classroom load test (issue 9): one server, 20+ concurrent sessions, on 127.0.0.1; stops by itself.

    .venv/bin/python -m benchmarks.classroom [--sessions 21] [--browsers 3] [--duration 40]

A few sessions are real browser tabs (headless Debian chromium, Playwright's async API, each in its
own context); the rest are light clients that speak Streamlit's websocket protocol with the
protobufs shipped in ``streamlit.proto`` (``benchmarks/_stclient.py``): they send the widget change a
browser would send and read the element deltas back, without drawing. The Flows page, 1000 particles,
the app's default settings (N = 50, the shipped model) as a class opening the teacher's link.

Scenarios (each ``--duration`` seconds):

- (a) *follow the teacher*: every 4 s the teacher moves the step count by one and every session
  follows within half a second (the same settings everywhere);
- (b) *own settings*: each session has its own seed (from its link) and walks its own step count,
  one change every 2-4 s;
- (c) each of the above again while one more session trains a model on the Train page (the
  training is stopped by closing its session, which also measures how soon the server frees it).

Latency of a change: for a light client, from sending the change to receiving the chart's message
(what a browser starts drawing); for a browser tab, from the key press to the new title on screen.
Checked on every change: no error box or exception, the chart shows the session's own step count
and its caption its own seed, and no session is offered another session's density. Server RSS is
sampled every 0.5 s: before (idle, after a warm-up), peak, after (sessions closed).
Writes the ``classroom`` section of benchmarks/RESULTS.md (or ``--results``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _browser as B  # noqa: E402
from benchmarks._results import RESULTS, md_table, write_section  # noqa: E402
from benchmarks._stclient import Session  # noqa: E402

TARGET_P95_S = {"a": 1.5, "b": 4.0}
START_STEPS = 50
EM = "Euler-Maruyama"


@dataclass
class Record:
    scenario: str
    client: str  # "ws" or "browser"
    ms: float
    ok: bool
    why: str = ""


@dataclass
class Scenario:
    name: str
    own: bool  # each session its own seed and walk (b) or all follow the teacher (a)
    train: bool
    records: list[Record] = field(default_factory=list)
    opens_ms: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    training: dict = field(default_factory=dict)

    def add(self, client: str, ms: float | None, ok: bool, why: str = "") -> None:
        self.records.append(Record(self.name, client, float("nan") if ms is None else ms, ok, why))


def check(res, steps: int, seed: int) -> tuple[bool, str]:
    """A light client's run: no error, its own N in the title, its own seed in the caption."""
    if res.errors:
        return False, "; ".join(res.errors)[:200]
    if f"N={steps}," not in res.title:
        return False, f"title {res.title[:80]!r} is not N={steps}"
    if not any(f"(seed {seed})" in t for t in res.texts):
        return False, f"caption does not say seed {seed}"
    return True, ""


class Teacher:
    """The teacher's step count: moves by one every ``period`` seconds (scenario a)."""

    def __init__(self, start: int, period: float = 4.0) -> None:
        self.t0 = time.monotonic()
        self.start = start
        self.period = period

    def steps(self) -> int:
        return max(2, self.start - int((time.monotonic() - self.t0) / self.period))


async def ws_student(url: str, i: int, sc: Scenario, stop_at: float, teacher: Teacher) -> None:
    seed = 100 + i if sc.own else 0
    steps = START_STEPS + (i % 7) if sc.own else START_STEPS
    s = Session(url, timeout=120)
    t0 = time.perf_counter()
    try:
        res = await s.open(f"seed={seed}&steps={steps}")
    except Exception as e:  # noqa: BLE001 - a failed connection is an error of the run
        sc.add("ws", None, False, f"open: {type(e).__name__}: {e}")
        return
    sc.opens_ms.append(1000 * (time.perf_counter() - t0))
    ok, why = check(res, steps, seed)
    if not ok:
        sc.add("ws", res.chart_ms, ok, "open: " + why)
    rng = random.Random(i)
    last_teacher = teacher.steps()
    try:
        while time.monotonic() < stop_at:
            if sc.own:
                await asyncio.sleep(rng.uniform(2.0, 4.0))
                steps = max(2, min(199, steps + rng.choice((-1, 1))))
            else:
                while teacher.steps() == last_teacher and time.monotonic() < stop_at:
                    await asyncio.sleep(0.05)
                last_teacher = teacher.steps()
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                steps = last_teacher
            if time.monotonic() >= stop_at:
                break
            res = await s.set_widget("steps N", steps)
            ok, why = check(res, steps, seed)
            opts = s.options.get("density", [])
            if any(o.startswith("mine: ") for o in opts):
                ok, why = False, "another session's density is offered"
            sc.add("ws", res.chart_ms, ok, why)
    except Exception as e:  # noqa: BLE001
        sc.add("ws", None, False, f"{type(e).__name__}: {e}")
    finally:
        await s.close()


async def browser_student(ctx, url: str, i: int, sc: Scenario, stop_at: float, teacher: Teacher) -> None:
    seed = 100 + i if sc.own else 0
    steps = START_STEPS + (i % 7) if sc.own else START_STEPS
    page = await ctx.new_page()
    t0 = time.perf_counter()
    try:
        await page.goto(f"{url}/?seed={seed}&steps={steps}")
        await page.wait_for_function(B.TITLE_HAS, arg=[f"N={steps},", EM], polling="raf", timeout=180_000)
        sc.opens_ms.append(1000 * (time.perf_counter() - t0))
        thumb = page.locator('[data-testid="stSlider"]').filter(has_text="steps N").get_by_role("slider")
        rng = random.Random(1000 + i)
        last_teacher = teacher.steps()
        while time.monotonic() < stop_at:
            if sc.own:
                await asyncio.sleep(rng.uniform(2.0, 4.0))
                step = rng.choice((-1, 1)) if 2 < steps < 199 else (1 if steps <= 2 else -1)
            else:
                while teacher.steps() == last_teacher and time.monotonic() < stop_at:
                    await asyncio.sleep(0.05)
                target = teacher.steps()
                last_teacher = target
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                step = target - steps
                if step == 0:
                    continue
            if time.monotonic() >= stop_at:
                break
            steps += step
            await page.evaluate("window.__gf.done = 0;")
            await thumb.focus()
            for _ in range(abs(step)):
                await thumb.press("ArrowRight" if step > 0 else "ArrowLeft")
            try:
                await page.wait_for_function(
                    B.TITLE_HAS, arg=[f"N={steps},", EM], polling="raf", timeout=120_000
                )
            except Exception as e:  # noqa: BLE001
                sc.add("browser", None, False, f"no redraw to N={steps}: {type(e).__name__}")
                continue
            gf = await page.evaluate("window.__gf")
            try:  # the checks below read the whole page: wait for its script run to finish
                await page.wait_for_function(
                    "!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
                )
            except Exception:  # noqa: BLE001 - still running: check what is there
                pass
            errors = await page.locator(
                '[data-testid="stException"], [data-testid="stAlertContentError"]'
            ).count()
            own = f"seed={seed}" in page.url  # the session's own settings, as synced into its link
            ok = errors == 0 and own
            why = "" if ok else f"errors {errors}, own seed in its URL {own}"
            sc.add("browser", gf["done"] - gf["input"], ok, why)
    except Exception as e:  # noqa: BLE001
        sc.add("browser", None, False, f"{type(e).__name__}: {e}"[:200])
    finally:
        await page.close()


async def trainer(url: str, sc: Scenario, stop_at: float, srv: B.Server) -> None:
    """One session that makes a density and trains on it until the scenario ends, then leaves."""
    s = Session(url, timeout=180)
    try:
        await s.open("")
        await s.rerun(page="train")
        await s.set_widget("make density", True)
        await s.set_widget("training steps (at most 20000)", 20000)
        res = await s.set_widget("train", True)
        sc.training["started"] = not res.errors
        while time.monotonic() < stop_at:
            await asyncio.sleep(0.5)
    except Exception as e:  # noqa: BLE001
        sc.training["error"] = f"{type(e).__name__}: {e}"
    finally:
        closed = time.time()
        await s.close()
        sc.training["closed_wall"] = closed


def rss_sampler(srv: B.Server, out: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.append(srv.rss())
        except OSError:
            return
        stop.wait(0.5)


async def run_scenario(srv: B.Server, sc: Scenario, n_ws: int, n_browsers: int, duration: float) -> None:
    from playwright.async_api import async_playwright

    stop = threading.Event()
    sampler = threading.Thread(target=rss_sampler, args=(srv, sc.rss, stop), daemon=True)
    sampler.start()
    teacher = Teacher(START_STEPS)
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=B.CHROMIUM, args=B.ARGS)
            ctxs = []
            for _ in range(n_browsers):
                ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
                await ctx.add_init_script(B.HOOK)
                ctxs.append(ctx)
            stop_at = time.monotonic() + duration
            tasks = [ws_student(srv.url, i, sc, stop_at, teacher) for i in range(n_ws)]
            tasks += [browser_student(c, srv.url, n_ws + j, sc, stop_at, teacher) for j, c in enumerate(ctxs)]
            if sc.train:
                tasks.append(trainer(srv.url, sc, stop_at, srv))
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + 300)
            await browser.close()
    finally:
        stop.set()
        sampler.join(5)


def training_outcome(srv: B.Server, sc: Scenario, wait_s: float = 30.0) -> None:
    """How long after its session closed the training stopped (from the server's log)."""
    closed = sc.training.get("closed_wall")
    if closed is None:
        return
    deadline = time.time() + wait_s
    while time.time() < deadline:
        ends = [d for d in srv.timings(closed - 1) if d.get("what") == "training end"]
        if ends:
            sc.training["stopped_after_s"] = ends[-1]["wall"] - closed
            sc.training["gone"] = ends[-1].get("gone")
            return
        time.sleep(0.5)
    sc.training["stopped_after_s"] = float("nan")


def summary_rows(scs: list[Scenario]) -> list[list[object]]:
    rows = []
    for sc in scs:
        for client in ("all", "ws", "browser"):
            recs = [r for r in sc.records if client == "all" or r.client == client]
            ms = [r.ms for r in recs if r.ms == r.ms]
            if not recs:
                continue
            errs = [r for r in recs if not r.ok]
            p95 = B.pct(ms, 95)
            rows.append(
                [
                    sc.name,
                    client,
                    len(recs),
                    B.pct(ms, 50),
                    p95,
                    max(ms) if ms else float("nan"),
                    len(errs),
                ]
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=21, help="concurrent sessions, browser tabs included")
    ap.add_argument("--browsers", type=int, default=3, help="of which real browser tabs")
    ap.add_argument("--duration", type=float, default=40.0, help="seconds per scenario")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    why = B.have_browser()
    n_browsers = 0 if why else min(args.browsers, args.sessions)
    n_ws = args.sessions - n_browsers
    load0 = os.getloadavg()
    scenarios = [
        Scenario("(a) follow the teacher", own=False, train=False),
        Scenario("(b) own settings", own=True, train=False),
        Scenario("(c) = (a) + one training", own=False, train=True),
        Scenario("(c) = (b) + one training", own=True, train=True),
    ]
    rss_rows = []
    with B.serve(ROOT) as srv:
        warm = Session(srv.url)

        async def warm_up() -> None:
            await warm.open(f"steps={START_STEPS}")
            await warm.close()

        asyncio.run(warm_up())
        time.sleep(2)
        rss_before = srv.rss()
        for sc in scenarios:
            print(
                f"{sc.name}: {n_ws} light clients + {n_browsers} browser tabs, {args.duration:.0f} s",
                flush=True,
            )
            before = srv.rss()
            asyncio.run(run_scenario(srv, sc, n_ws, n_browsers, args.duration))
            if sc.train:
                training_outcome(srv, sc)
            time.sleep(3)
            after = srv.rss()
            rss_rows.append([sc.name, before, max(sc.rss) if sc.rss else float("nan"), after])
            print(
                md_table(
                    ["scenario", "client", "changes", "p50 ms", "p95 ms", "max ms", "errors"],
                    summary_rows([sc]),
                ),
                flush=True,
            )
        time.sleep(5)
        rss_end = srv.rss()
    load1 = os.getloadavg()
    rows = summary_rows(scenarios)
    p95 = {sc.name: B.pct([r.ms for r in sc.records if r.ms == r.ms], 95) for sc in scenarios}
    verdict = []
    for base, key in ((scenarios[0], "a"), (scenarios[1], "b")):
        t = TARGET_P95_S[key] * 1000
        verdict.append([base.name, p95[base.name], t, "yes" if p95[base.name] <= t else "NO"])
    for c, base in ((scenarios[2], scenarios[0]), (scenarios[3], scenarios[1])):
        ratio = p95[c.name] / p95[base.name] if p95[base.name] else float("nan")
        verdict.append(
            [
                c.name,
                p95[c.name],
                f"<= 2 x {p95[base.name]:.0f}",
                f"{ratio:.2f}x " + ("yes" if ratio <= 2 else "NO"),
            ]
        )
    errors = [r for sc in scenarios for r in sc.records if not r.ok]
    opens = [ms for sc in scenarios for ms in sc.opens_ms]
    train_lines = []
    for sc in scenarios:
        if sc.train:
            tr = sc.training
            train_lines.append(
                f"{sc.name}: training started {tr.get('started')}, "
                f"stopped {tr.get('stopped_after_s', float('nan')):.1f} s after its session closed "
                f"(by the session check: {tr.get('gone')}){'; ' + tr['error'] if tr.get('error') else ''}"
            )
    body = "\n\n".join(
        [
            f"{args.sessions} concurrent sessions on one server ({n_ws} light websocket clients + "
            f"{n_browsers} headless chromium tabs{'' if not why else ' - ' + why}), Flows page, "
            f"1000 particles, N around {START_STEPS}, {args.duration:.0f} s per scenario, all on this "
            f"machine (the browsers and clients share its {os.cpu_count()} cores with the server). "
            f"Load average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end.",
            "**Latency of a change** (ms; light client: change sent to chart message received; browser: key "
            "press to the new title drawn). Errors count error boxes, exceptions, timeouts, a wrong N or "
            "seed (another session's run) and another session's density offered:",
            md_table(["scenario", "client", "changes", "p50 ms", "p95 ms", "max ms", "errors"], rows),
            md_table(["scenario", "p95 ms (all clients)", "target", "met"], verdict),
            f"Page loads (a session opening the link, to its first chart): p50 {B.pct(opens, 50):.0f} ms, "
            f"p95 {B.pct(opens, 95):.0f} ms over {len(opens)} loads.",
            *train_lines,
            "**Server memory** (RSS, MB; before = idle after a warm-up): "
            f"{rss_before:.0f} before the first scenario, {rss_end:.0f} after the last.",
            md_table(["scenario", "RSS before", "RSS peak", "RSS after"], rss_rows),
            f"Errors: {len(errors)}"
            + ("" if not errors else " - " + "; ".join(sorted({e.why for e in errors}))[:600]),
        ]
    )
    given = list(argv if argv is not None else sys.argv[1:])
    if "--results" in given:
        i = given.index("--results")
        del given[i : i + 2]
    write_section(
        "classroom",
        "App: classroom load test (one server, many sessions)",
        " ".join(["python -m benchmarks.classroom", *given]),
        body,
        args.results,
    )
    print(body)


if __name__ == "__main__":
    main()
