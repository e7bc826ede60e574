"""Two app replicas behind Debian's nginx (deploy/serve.sh), driven by the real browser.

Checks that the Flows page loads and redraws through the proxy (websocket upgrade), that fresh
browsers (browser contexts, each with its own cookies) are spread over both replicas, and that every
request of one browser, its websocket included, reaches one replica. The replica is read from the
``X-Upstream`` header nginx adds and from nginx's access log (``sticky=<cookie> upstream=<addr>``).

Skipped when nginx or chromium is missing (``make nginx`` / ``make browser`` install them as
root), unless CI=true: then it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("replicas")]

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the chromium launch settings are the benchmarks' (benchmarks/_browser.py)
    sys.path.insert(0, str(ROOT))
from benchmarks._browser import ARGS, CHROMIUM, PLOT_JS, chart_frame  # noqa: E402

POINTS = ".js-plotly-plot .scatterlayer .point"
TIMEOUT_MS = 90_000
N_BROWSERS = 12  # all on one of 2 replicas by chance: probability 2^-11
SERVE_SECONDS = 900  # the servers stop by themselves even if this test process dies
LOG_LINE = re.compile(
    r'"(?P<method>\S+) (?P<uri>\S+) [^"]*" (?P<status>\d+) sticky=(?P<sticky>\S+) upstream=(?P<up>\S+)'
)


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} on CI")
    pytest.skip(reason)


def _nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


def _free_ports(n: int) -> int:
    """A port p with p .. p + n - 1 all free on 127.0.0.1."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    if _nginx() is None:
        _skip_or_fail("nginx is not installed (`make nginx` installs Debian's nginx as root)")
    if not os.path.exists(CHROMIUM):
        _skip_or_fail(f"{CHROMIUM} is not installed (`make browser` installs Debian chromium)")
    pytest.importorskip("playwright.sync_api")
    run_dir = tmp_path_factory.mktemp("serve")
    port = _free_ports(3)  # the proxy, then the 2 replicas
    cmd = ["bash", str(ROOT / "deploy" / "serve.sh"), "--replicas", "2", "--port", str(port)]
    cmd += ["--run-dir", str(run_dir), "--max-seconds", str(SERVE_SECONDS)]
    cmd += ["--streamlit", str(Path(sys.executable).parent / "streamlit")]
    log = open(run_dir / "serve.out", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.time()
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() - start > 120:
                pytest.fail(f"the replicas did not start:\n{(run_dir / 'serve.out').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {
            "url": url,
            "log": run_dir / "access.log",
            "replicas": {f"127.0.0.1:{port + i}" for i in (1, 2)},
        }
    finally:
        # serve.sh stops its replicas and nginx on SIGTERM; the group signal reaches them too
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _cookie(ctx) -> str:
    return next(c["value"] for c in ctx.cookies() if c["name"] == "geoflow_replica")


def _log_entries(path: Path) -> list[dict]:
    return [m.groupdict() for m in map(LOG_LINE.search, path.read_text().splitlines()) if m]


def _wait_idle(pg):
    """Wait for the script run to end and the chart to have points; returns the chart's frame."""
    pg.wait_for_timeout(300)
    pg.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=TIMEOUT_MS)
    fr = chart_frame(pg, TIMEOUT_MS)
    fr.wait_for_selector(POINTS, timeout=TIMEOUT_MS)
    return fr


def _no_errors(pg) -> None:
    assert pg.locator('[data-testid="stException"]').count() == 0, "a Python exception box is shown"
    errors = pg.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()


def _title_has(pg, text: str) -> None:
    pg.wait_for_function(
        f"({PLOT_JS}?.layout?.title?.text || '').includes({text!r})",
        timeout=TIMEOUT_MS,
    )


def test_sessions_spread_over_replicas_and_stay(proxy, browser):
    """Fresh browsers land on both replicas; each one's later requests all reach its first replica."""
    first: dict[str, str] = {}
    contexts = [browser.new_context() for _ in range(N_BROWSERS)]
    try:
        for k, ctx in enumerate(contexts):
            r = ctx.request.get(f"{proxy['url']}/")
            assert r.ok
            first[str(k)] = r.headers["x-upstream"]
            assert first[str(k)] in proxy["replicas"]
            for path in ("/", "/_stcore/health", "/_stcore/host-config", "/"):
                again = ctx.request.get(f"{proxy['url']}{path}")
                assert again.ok, path
                assert again.headers["x-upstream"] == first[str(k)], f"browser {k} moved on {path}"
            assert _cookie(ctx)
    finally:
        for ctx in contexts:
            ctx.close()
    spread = Counter(first.values())
    assert set(spread) == proxy["replicas"], f"all {N_BROWSERS} browsers on one replica: {spread}"


def test_flows_page_through_the_proxy(proxy, browser):
    """The Flows page draws and redraws on each replica; its websocket stays on that replica."""
    served: dict[str, str] = {}  # upstream -> the browser's sticky cookie
    tries = 0
    while set(served) != proxy["replicas"]:
        tries += 1
        assert tries <= N_BROWSERS, f"no browser reached every replica: {served}"
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            pg = ctx.new_page()
            resp = pg.goto(f"{proxy['url']}/?steps=20&n=300")
            upstream = resp.headers["x-upstream"]
            if upstream in served:
                continue  # this replica is covered already; a fresh browser may land on the other one
            t0 = time.time()
            fr = _wait_idle(pg)
            _title_has(pg, "N=20,")
            _no_errors(pg)
            assert fr.locator(POINTS).count() >= 300
            # a step change reruns the script over the websocket and redraws the chart
            thumb = pg.locator('[data-testid="stSlider"]').filter(has_text="steps N").get_by_role("slider")
            thumb.focus()
            for _ in range(10):
                thumb.press("ArrowLeft")
            _title_has(pg, "N=10,")
            _wait_idle(pg)
            _no_errors(pg)
            print(f"{upstream}: chart, step change and redraw in {time.time() - t0:.1f} s")
            served[upstream] = _cookie(ctx)
        finally:
            ctx.close()  # closes the websocket, so nginx logs it

    # nginx logs a websocket when it closes: wait for both, then check every request of each browser
    deadline = time.time() + 30
    while True:
        entries = _log_entries(proxy["log"])
        streams = {e["sticky"] for e in entries if e["uri"].startswith("/_stcore/stream")}
        if set(served.values()) <= streams or time.time() > deadline:
            break
        time.sleep(0.5)
    for upstream, cookie in served.items():
        mine = [e for e in entries if e["sticky"] == cookie]
        assert any(e["uri"].startswith("/_stcore/stream") and e["status"] == "101" for e in mine), (
            f"no websocket upgrade logged for the browser on {upstream}"
        )
        assert {e["up"] for e in mine} == {upstream}, f"a browser's requests went to several replicas: {mine}"
