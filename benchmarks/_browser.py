"""Serve the app and measure it in headless Debian chromium (Playwright): input to redraw, with a breakdown.

Shared by ``benchmarks/app.py`` (latency of one user) and ``benchmarks/classroom.py`` (many users).
Everything runs on 127.0.0.1 and stops by itself.

A change is timed *in the page*: from the input event (key press on the steps slider, click on the
projection toggle; a capturing listener records ``performance.now()``) to the first animation
frame at which the Flows chart's title names the new run (``N=<steps>, NFE=<nfe>``). A websocket
hook records when the browser sent the rerun request and when each server message arrived, so the
time splits into: the frontend (input to request), the server (request to the chart's message),
and the browser's redraw (that message to the new title on screen). The server's own log
(``GEOFLOW_TIMING_LOG``) adds the sampler's time and whether the run came from the cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "app") not in sys.path:  # the app's modules (its live chart's component name)
    sys.path.insert(0, str(ROOT / "app"))

from live_chart import NAME as LIVE_CHART_URL  # noqa: E402 - the Flows page's live chart frame

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHART = ".js-plotly-plot"

# Installed before the page's own scripts: input times, websocket send / receive times and sizes.
HOOK = """
window.__gf = {input: 0, sent: [], recv: []};
for (const ev of ['keydown', 'pointerdown']) {
  document.addEventListener(ev, () => { window.__gf.input = performance.now(); }, true);
}
const _send = WebSocket.prototype.send;
WebSocket.prototype.send = function (d) {
  window.__gf.sent.push(performance.now());
  return _send.call(this, d);
};
const _WS = window.WebSocket;
window.WebSocket = function (...a) {
  const ws = new _WS(...a);
  ws.addEventListener('message', (e) => {
    const n = e.data.byteLength || e.data.size || 0;
    window.__gf.recv.push([performance.now(), n]);
  });
  return ws;
};
window.WebSocket.prototype = _WS.prototype;
Object.assign(window.WebSocket, _WS);
"""

# the first plotly chart of the page: in the page itself (st.plotly_chart) or in a component's
# same-origin frame (the Flows page's live chart, app/live_chart.py)
PLOT_JS = """(() => {
  const docs = [document];
  for (const f of document.querySelectorAll('iframe')) {
    try { if (f.contentDocument) docs.push(f.contentDocument); } catch (e) {}
  }
  for (const d of docs) { const el = d.querySelector('.js-plotly-plot'); if (el) return el; }
  return null;
})()"""

# true once the first chart has drawn a point
HAS_POINTS = (
    "() => { const el = " + PLOT_JS + "; return !!(el && el.querySelector('.scatterlayer .point')); }"
)

# true (and the time noted) once the first chart's title contains every given substring
TITLE_HAS = (
    """
(parts) => {
  const el = """
    + PLOT_JS
    + """;
  const t = el && el.layout && el.layout.title ? (el.layout.title.text || '') : '';
  if (parts.every((p) => t.includes(p))) { window.__gf.done = performance.now(); return true; }
  return false;
}
"""
)


def chart_frame(pg: object, timeout_ms: int = 90_000) -> object:
    """The Playwright frame that draws the page's chart: the live chart's frame, else the page itself.

    The Flows page draws in a component frame (``app/live_chart.py``); the other pages use
    ``st.plotly_chart`` in the page. Waits until one of the two holds a plotly chart.
    """
    end = time.perf_counter() + timeout_ms / 1000
    while True:
        for f in pg.frames:  # type: ignore[attr-defined]
            if LIVE_CHART_URL in f.url and f.locator(CHART).count():
                return f
        if pg.locator(CHART).count():  # type: ignore[attr-defined]
            return pg.main_frame  # type: ignore[attr-defined]
        if time.perf_counter() > end:
            raise TimeoutError(f"no plotly chart on the page within {timeout_ms} ms")
        pg.wait_for_timeout(100)  # type: ignore[attr-defined]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    started: float
    healthy_s: float

    def timings(self, since: float, until: float | None = None) -> list[dict]:
        """The server's timing log lines with wall time in [since, until]."""
        out = []
        if not self.log.exists():
            return out
        for line in self.log.read_text().splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("wall", 0) >= since and (until is None or d["wall"] <= until):
                out.append(d)
        return out

    def rss(self) -> float:
        return rss_mb(self.proc.pid)


@contextlib.contextmanager
def serve(root: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 120.0) -> Iterator[Server]:
    """``streamlit run`` the app of ``root`` on 127.0.0.1 (what `make run` starts), until the block ends."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="geoflow-timing-", suffix=".jsonl")[1])
    streamlit = Path(sys.executable).parent / "streamlit"
    full_env = {**os.environ, "GEOFLOW_TIMING_LOG": str(log), **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            str(streamlit),
            "run",
            str(root / "app" / "streamlit_app.py"),
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
        ],
        cwd=root,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"streamlit did not start within {timeout:.0f} s")
        yield Server(url, proc, log, t0, time.perf_counter() - t0)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.unlink(missing_ok=True)


@dataclass
class Change:
    """One measured change."""

    kind: str
    total_ms: float
    frontend_ms: float = float("nan")  # input -> rerun request sent
    server_ms: float = float("nan")  # request -> the message drawn (the chart or its cached reference)
    redraw_ms: float = float("nan")  # that message -> new title on screen
    chart_bytes: int = 0
    sampler_ms: float = 0.0  # server log: sampler time in this change (0 on a cache hit)
    script_ms: float = float("nan")
    how: str = ""  # hit / miss / shared
    react_ms: float = float("nan")  # the live chart's JSON.parse + Plotly.react (nan: st.plotly_chart)


@dataclass
class Tab:
    """One browser tab on the Flows page."""

    page: object
    server: Server
    changes: list[Change] = field(default_factory=list)
    read_log: bool = True  # False for a server without the timing log (an older checkout)

    def open(self, query: str, expect: list[str], timeout_ms: int = 180_000) -> float:
        t0 = time.perf_counter()
        self.page.goto(f"{self.server.url}/?{query}")  # type: ignore[attr-defined]
        self.page.wait_for_function(TITLE_HAS, arg=expect, polling="raf", timeout=timeout_ms)  # type: ignore[attr-defined]
        self.settle()
        return time.perf_counter() - t0

    def settle(self, timeout_ms: int = 120_000) -> None:
        """Wait until the script run has finished (Streamlit's status widget gone)."""
        self.page.wait_for_function(  # type: ignore[attr-defined]
            "!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms
        )

    def _input(self, action: str) -> None:
        pg = self.page
        if action in ("ArrowLeft", "ArrowRight"):
            thumb = pg.locator('[data-testid="stSlider"]').filter(has_text="steps N").get_by_role("slider")  # type: ignore[attr-defined]
            thumb.focus()
            thumb.press(action)
        elif action == "toggle":
            pg.get_by_text("projection step (predict-project)").click()  # type: ignore[attr-defined]
        else:
            raise ValueError(action)

    def _live_draw(self) -> dict | None:
        """The live chart's last draw (``window.__gfDraw`` in its frame), None without a live chart."""
        for f in self.page.frames:  # type: ignore[attr-defined]
            if LIVE_CHART_URL in f.url:
                return f.evaluate("window.__gfDraw || null")
        return None

    def change(self, kind: str, action: str, expect: list[str], timeout_ms: int = 120_000) -> Change:
        pg = self.page
        pg.evaluate("window.__gf.sent = []; window.__gf.recv = []; window.__gf.done = 0;")  # type: ignore[attr-defined]
        wall0 = time.time()
        self._input(action)
        pg.wait_for_function(TITLE_HAS, arg=expect, polling="raf", timeout=timeout_ms)  # type: ignore[attr-defined]
        gf = pg.evaluate("window.__gf")  # type: ignore[attr-defined]
        self.settle()
        draw = self._live_draw()
        wall1 = time.time()
        t_in, t_done = gf["input"], gf["done"]
        c = Change(kind, t_done - t_in)
        if draw:
            c.react_ms = float(draw.get("parse", 0.0)) + float(draw.get("react", 0.0))
        sent = [s for s in gf["sent"] if s >= t_in]
        if sent:
            c.frontend_ms = sent[0] - t_in
            before = [r for r in gf["recv"] if sent[0] <= r[0] <= t_done]
            if before:
                big = max(before, key=lambda r: r[1])
                drawn = big if big[1] > 50_000 else before[-1]
                c.server_ms = drawn[0] - sent[0]
                c.redraw_ms = t_done - drawn[0]
                c.chart_bytes = int(big[1])
        if self.read_log:
            logs = self.server.timings(wall0, wall1)
            c.sampler_ms = sum(d["ms"] for d in logs if d.get("what") == "sampler")
            hows = [d["how"] for d in logs if d.get("what") == "trajectory"]
            c.how = hows[0] if hows else ""
            scripts = [d["ms"] for d in logs if d.get("what") == "script"]
            c.script_ms = scripts[-1] if scripts else float("nan")
        self.changes.append(c)
        return c


@contextlib.contextmanager
def browser(n_tabs: int = 1, viewport: tuple[int, int] = (1400, 1000)) -> Iterator[list[object]]:
    """``n_tabs`` pages, each in its own browser context (its own Streamlit session)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pages = []
            for _ in range(n_tabs):
                ctx = b.new_context(viewport={"width": viewport[0], "height": viewport[1]})
                ctx.add_init_script(HOOK)
                pages.append(ctx.new_page())
            yield pages
        finally:
            b.close()


def have_browser() -> str:
    """'' if chromium and Playwright are there, else why not."""
    if not os.path.exists(CHROMIUM):
        return f"no {CHROMIUM}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return ""


def pct(xs: list[float], q: float) -> float:
    """The q-th percentile (nearest rank on sorted values; NaN for none)."""
    v = sorted(x for x in xs if x == x)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(q / 100 * len(v) + 0.5)) - 1))
    return v[k]
