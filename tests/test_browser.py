"""Real-browser smoke test: serve the app, load every page in headless Debian chromium (Playwright).

Checks that the plotly chart draws points, that moving the step slider and toggling projection redraw
it (frame count and title change), and that no exception or error box appears. Screenshots go to
``test-artifacts/``. Skipped when /usr/bin/chromium is missing, unless CI=true (then it fails).
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from geoflow.checkpoints import read_manifest

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
POINTS = ".js-plotly-plot .scatterlayer .point"
CHART_TIMEOUT_MS = 90_000


def _require_browser() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is missing on CI (`make browser` installs it)")
        pytest.skip(f"{CHROMIUM} is not installed (`make browser` installs Debian chromium)")
    pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    _require_browser()
    port = _free_port()
    streamlit = Path(sys.executable).parent / "streamlit"
    cmd = [
        str(streamlit),
        "run",
        str(ROOT / "app" / "streamlit_app.py"),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    start = time.time()
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() - start > 60:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"streamlit did not start:\n{out[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page():
    _require_browser()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def _no_errors(pg) -> None:
    assert pg.locator('[data-testid="stException"]').count() == 0, "a Python exception box is shown"
    errors = pg.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()


def _n_frames(pg, i: int = 0) -> int:
    return pg.evaluate(f"document.querySelectorAll('.js-plotly-plot')[{i}]._transitionData._frames.length")


def _title(pg, i: int = 0) -> str:
    return pg.evaluate(f"document.querySelectorAll('.js-plotly-plot')[{i}].layout.title.text")


def _wait_idle(pg) -> None:
    """Wait for the script run to finish (the status widget disappears) and the chart to have points."""
    pg.wait_for_timeout(300)
    pg.wait_for_function(
        "!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=CHART_TIMEOUT_MS
    )
    pg.wait_for_selector(POINTS, timeout=CHART_TIMEOUT_MS)


def _slider_left(pg, label: str, presses: int) -> None:
    thumb = pg.locator('[data-testid="stSlider"]').filter(has_text=label).get_by_role("slider")
    thumb.focus()
    for _ in range(presses):
        thumb.press("ArrowLeft")


def test_flows_page_draws_and_redraws(server, page):
    t0 = time.time()
    page.goto(f"{server}/?steps=20&n=300")
    page.wait_for_selector(POINTS, timeout=CHART_TIMEOUT_MS)
    first_chart_s = time.time() - t0
    _wait_idle(page)
    _no_errors(page)
    assert page.locator(POINTS).count() >= 300
    frames = _n_frames(page)
    page.screenshot(path=str(ARTIFACTS / "flows.png"), full_page=True)

    # play runs in the browser: the slider advances and the particles move, with no server round trip
    pts = ".js-plotly-plot .scatterlayer .trace:last-child .point"
    before = page.evaluate(
        f"Array.from(document.querySelectorAll('{pts}')).slice(0, 20).map(e => e.getAttribute('transform'))"
    )
    page.locator(".updatemenu-item-text", has_text="Play").first.click()
    page.wait_for_function(
        "document.querySelector('.js-plotly-plot')._fullLayout.sliders[0].active > 2",
        timeout=CHART_TIMEOUT_MS,
    )
    after = page.evaluate(
        f"Array.from(document.querySelectorAll('{pts}')).slice(0, 20).map(e => e.getAttribute('transform'))"
    )
    assert before != after
    page.locator(".updatemenu-item-text", has_text="Pause").first.click()

    _slider_left(page, "steps N", 10)  # 20 -> 10 steps (each key press may rerun; wait for the last)
    page.wait_for_function(
        "document.querySelector('.js-plotly-plot').layout.title.text.includes('N=10,')",
        timeout=CHART_TIMEOUT_MS,
    )
    _wait_idle(page)
    assert _n_frames(page) < frames
    _no_errors(page)

    page.get_by_text("projection step (predict-project)").click()
    page.wait_for_function(
        "document.querySelector('.js-plotly-plot').layout.title.text.includes('Predict-project')",
        timeout=CHART_TIMEOUT_MS,
    )
    _wait_idle(page)
    assert page.locator(POINTS).count() >= 300
    _no_errors(page)
    assert "projection=True" in page.url
    page.screenshot(path=str(ARTIFACTS / "flows_projection.png"), full_page=True)
    print(f"first chart after {first_chart_s:.1f} s")


@pytest.mark.parametrize("name", ["projection", "maths"])
def test_page_draws(server, page, name):
    page.goto(f"{server}/{name}?steps=10&n=300")
    page.wait_for_selector(POINTS, timeout=CHART_TIMEOUT_MS)
    _wait_idle(page)
    _no_errors(page)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_images_page(server, page):
    if "digits-vp" not in read_manifest():
        pytest.skip("no shipped digits-vp model: the Images page needs pretrained image models")
    page.goto(f"{server}/images?img_steps=10&img_n=16")
    page.wait_for_selector(POINTS, timeout=CHART_TIMEOUT_MS)
    _wait_idle(page)
    _no_errors(page)
    assert page.locator('[data-testid="stImage"] img').count() >= 1
    page.screenshot(path=str(ARTIFACTS / "images.png"), full_page=True)


def test_train_page_drawing_makes_a_density(server, page):
    """Lasso on the drawing grid (plotly selection -> st.plotly_chart on_select), then a density."""
    page.goto(f"{server}/train")
    page.get_by_text("draw", exact=True).click()
    page.wait_for_selector(POINTS, timeout=CHART_TIMEOUT_MS)
    _wait_idle(page)
    box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx + 100, cy)
    page.mouse.down()
    for k in range(1, 41):
        a = 2 * math.pi * k / 40
        page.mouse.move(cx + 100 * math.cos(a), cy + 60 * math.sin(a))
    page.mouse.up()
    page.get_by_text(re.compile(r"^[1-9][0-9]* grid cells selected")).wait_for(timeout=CHART_TIMEOUT_MS)
    page.get_by_role("button", name="make density from the drawing").click()
    page.get_by_text("density mine: my_data created").wait_for(timeout=CHART_TIMEOUT_MS)
    _no_errors(page)
    page.screenshot(path=str(ARTIFACTS / "train.png"), full_page=True)
