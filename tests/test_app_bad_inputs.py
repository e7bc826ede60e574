"""The app's half of the bad-input corpus (issue 10): URL values of every page, uploads, typed specs, faults.

Every case asserts: no exception escapes, a message names the problem, and (for URL values) the
value used instead is named and is the one in effect. Fault tests: an exception inside a page is
caught at the page boundary (the app keeps working), a corrupt or mismatched file in a copy of
``pretrained/`` marks only that model unavailable with its reason, and a training whose session
has gone stops and frees its slot.
"""

from __future__ import annotations

import codecs
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from app_charts import chart_specs

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import geoflow.checkpoints as ckpt  # noqa: E402
import geoflow.run as run_api  # noqa: E402
from geoflow.registry import PREDICT_PROJECT_SAMPLERS, get_sampler  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app" / "streamlit_app.py")
if str(ROOT / "app") not in sys.path:
    sys.path.insert(0, str(ROOT / "app"))

import cache  # noqa: E402
import state  # noqa: E402
import training  # noqa: E402

pytestmark = pytest.mark.xdist_group("app")  # AppTest shares the process-wide caches
PAGES = {
    "flows": None,
    "projection": "views/projection.py",
    "images": "views/images.py",
    "maths": "views/maths.py",
    "train": "views/train.py",
}
PP_DEFAULT = float(get_sampler("predict_project").default_strength)
PROJ_DEFAULT = float(get_sampler(PREDICT_PROJECT_SAMPLERS[0]).default_strength)
SMALL = {
    "flows": {"n": "100", "steps": "5"},
    "projection": {"n": "100", "steps": "4"},
    "images": {"img_steps": "3"},
}


def open_page(page: str, params: dict[str, str], **session) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    for k, v in params.items():
        at.query_params[k] = v
    for k, v in session.items():
        at.session_state[k] = v
    if PAGES.get(page):
        at.switch_page(PAGES[page])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def messages(at: AppTest) -> list[str]:
    return [w.value for w in at.warning] + [e.value for e in at.error] + [t.value for t in at.toast]


# page, the bad URL value(s), what the message must say, (session key, the value used)
URL_CASES = [
    (
        "flows",
        {"steps": "inf"},
        ["steps='inf'", "not a finite number", "using steps=50"],
        ("flows.steps", 50),
    ),
    ("flows", {"n": "-inf"}, ["n='-inf'", "not a finite number", "using n=1000"], ("flows.n", 1000)),
    ("flows", {"seed": "1e999"}, ["seed='1e999'", "not a finite number", "using seed=0"], ("flows.seed", 0)),
    ("flows", {"steps": "0"}, ["steps='0'", "outside", "using steps=50"], ("flows.steps", 50)),
    ("flows", {"steps": "1e308"}, ["steps='1e308'", "outside", "using steps=50"], ("flows.steps", 50)),
    ("flows", {"steps": "abc"}, ["steps='abc'", "not a number", "using steps=50"], ("flows.steps", 50)),
    ("flows", {"steps": "2.5"}, ["steps='2.5'", "not an integer", "using steps=50"], ("flows.steps", 50)),
    ("flows", {"n": "100000"}, ["n='100000'", "outside", "using n=1000"], ("flows.n", 1000)),
    (
        "flows",
        {"sampler": "nope"},
        ["sampler='nope'", "using sampler='euler_maruyama'"],
        ("flows.sampler", "euler_maruyama"),
    ),
    ("flows", {"sde": "xx"}, ["sde='xx'", "not one of", "using sde='vp'"], ("flows.sde", "vp")),
    (
        "flows",
        {"spacing": "weird"},
        ["spacing='weird'", "using spacing='default'"],
        ("flows.spacing", "default"),
    ),
    ("flows", {"score": "hack"}, ["score='hack'", "using score='auto'"], ("flows.score", "auto")),
    (
        "flows",
        {"source": "hack"},
        ["score='hack'", "using score='auto'"],
        ("flows.score", "auto"),
    ),  # legacy key
    (
        "flows",
        {"project": "maybe"},
        ["project='maybe'", "true or false", "using project=False"],
        ("flows.project", False),
    ),
    (
        "flows",
        {"strength": "5000"},
        ["strength='5000'", "outside", f"using strength={PP_DEFAULT!r}"],
        ("flows.strength", PP_DEFAULT),
    ),
    ("flows", {"strength": "nan"}, ["strength='nan'", "not a finite number"], ("flows.strength", PP_DEFAULT)),
    ("flows", {"strength": "inf"}, ["strength='inf'", "not a finite number"], ("flows.strength", PP_DEFAULT)),
    (
        "flows",
        {"overlays": "x0_hat,bogus"},
        ["unknown 'bogus'", "using overlays='x0_hat'"],
        ("flows.overlays", ["x0_hat"]),
    ),
    (
        "flows",
        {"density": "[x](http://e)"},
        ["using density='eight_gaussians'", "\\[x\\]"],
        ("flows.density", "eight_gaussians"),
    ),
    (
        "flows",
        {"density": "mine: nobody"},
        ["mine: nobody", "using density='eight_gaussians'"],
        ("flows.density", "eight_gaussians"),
    ),
    (
        "projection",
        {"pstrength": "5000"},
        ["strength='5000'", "outside", f"using strength={PROJ_DEFAULT!r}"],
        ("projection.strength", PROJ_DEFAULT),
    ),
    (
        "projection",
        {"pstrength": "inf"},
        ["strength='inf'", "not a finite number"],
        ("projection.strength", PROJ_DEFAULT),
    ),
    (
        "projection",
        {"variant": "bogus"},
        ["sampler='bogus'", f"using sampler={PREDICT_PROJECT_SAMPLERS[0]!r}"],
        ("projection.sampler", PREDICT_PROJECT_SAMPLERS[0]),
    ),
    (
        "projection",
        {"pkind": "bogus"},
        ["projection='bogus'", "using projection='tweedie'"],
        ("projection.projection", "tweedie"),
    ),
    ("projection", {"steps": "-3"}, ["steps='-3'", "outside", "using steps=20"], ("projection.steps", 20)),
    ("images", {"img_strength": "5000"}, ["strength='5000'", "outside", "using strength="], None),
    (
        "images",
        {"img_seed": "1e999"},
        ["seed='1e999'", "not a finite number", "using seed=0"],
        ("images.seed", 0),
    ),
    ("images", {"img_n": "17"}, ["n='17'", "not one of", "using n=36"], ("images.n", 36)),
    ("images", {"img_steps": "-5"}, ["steps='-5'", "outside", "using steps=20"], ("images.steps", 20)),
    ("images", {"img_data": "cats"}, ["data='cats'", "not one of", "using data="], None),
    ("maths", {"m_t": "nan"}, ["t='nan'", "not a finite number", "using t=0.3"], ("maths.t", 0.3)),
    ("maths", {"t": "2"}, ["t='2'", "outside", "using t=0.3"], ("maths.t", 0.3)),
    (
        "maths",
        {"beta_max": "inf"},
        ["beta_max='inf'", "not a finite number", "using beta_max=10.0"],
        ("maths.beta_max", 10.0),
    ),
    ("maths", {"T": "0"}, ["T='0'", "outside", "using T=1.0"], ("maths.T", 1.0)),
    (
        "maths",
        {"sigma_max": "-1"},
        ["sigma_max='-1'", "outside", "using sigma_max=10.0"],
        ("maths.sigma_max", 10.0),
    ),
    (
        "maths",
        {"m_density": "nope"},
        ["density='nope'", "using density='asymmetric'"],
        ("maths.density", "asymmetric"),
    ),
]


@pytest.mark.parametrize(("page", "params", "expect", "used"), URL_CASES, ids=lambda v: str(v)[:40])
def test_bad_url_value_names_the_value_used(page, params, expect, used):
    at = open_page(page, {**SMALL.get(page, {}), **params})
    msgs = messages(at)
    assert any(all(f in m for f in expect) for m in msgs), (expect, msgs)
    if used is not None:
        key, value = used
        assert at.session_state[key] == value
    assert not any("Traceback" in m for m in msgs)


def test_notices_are_plain_text():
    """A value that is Markdown (a link, a directive, maths, an icon, HTML, a bare URL) is shown literally."""
    cases = {  # what was typed -> how it must reach st.warning / st.toast (every active mark escaped)
        "[x](http://e)": "\\[x\\](http\u200b\\://e)",
        ":red[big]": "\\:red\\[big\\]",
        "$x^2$": "\\$x^2\\$",
        ":material/home:": "\\:material/home:",
        "<b>hi</b>": "\\<b>hi\\</b>",
        "**bold**": "\\*\\*bold\\*\\*",
        "www.e.com": "www\u200b.e.com",
        "http://e.com": "http\u200b\\://e.com",
        "a@b.com": "a@\u200bb.com",
        "`code`": "\\`code\\`",
    }
    for raw, escaped in cases.items():
        assert escaped in state.plain(f"URL setting density={raw!r} ignored"), raw
    assert (
        state.plain("could not read my_data.csv: non-numeric value")
        == "could not read my_data.csv: non-numeric value"
    )


# --------------------------------------------------------------------------- uploads and typed specs
POINTS = np.random.default_rng(0).normal(size=(40, 2))
CSV = "x,y\n" + "\n".join(f"{a:.4f},{b:.4f}" for a, b in POINTS)
MIXTURE = {"weights": [0.5, 0.5], "means": [[-2, 0], [2, 0]], "covs": [[[0.3, 0], [0, 0.3]]] * 2}

UPLOADS = [  # file name, bytes, "ok" (a density is made) or the words of the refusal
    ("utf16.csv", codecs.BOM_UTF16_LE + CSV.encode("utf-16-le"), "ok"),
    ("utf16-nobom.csv", CSV.encode("utf-16-be"), "ok"),
    ("utf8-bom.csv", codecs.BOM_UTF8 + CSV.encode(), "ok"),
    ("latin1.csv", ("xé,yè\n" + CSV.split("\n", 1)[1]).encode("latin-1"), "ok"),
    ("binary.csv", bytes(range(256)) * 8, "not a text file"),
    ("mixture.json", json.dumps(MIXTURE).encode(), "ok"),
    ("mixture-utf16.json", codecs.BOM_UTF16_LE + json.dumps(MIXTURE).encode("utf-16-le"), "ok"),
    ("deep.json", b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    ("weights.json", json.dumps({**MIXTURE, "weights": [0.7, 0.7]}).encode(), "sum to 1"),
    ("list.json", b"[1, 2, 3]", "must be an object"),
    ("broken.json", b'{"weights": [1,', "not valid JSON"),
    ("link.csv", b"x,y\n[x](http://e),1\n" + b"1,2\n" * 20, "non-numeric"),
]


@pytest.mark.parametrize(("name", "body", "expect"), UPLOADS, ids=[u[0] for u in UPLOADS])
def test_uploads_are_decoded_or_clearly_refused(name, body, expect):
    at = open_page("train", {}, data_source="upload CSV")
    at.get("file_uploader")[0].set_value((name, body, "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    if expect == "ok":
        assert not errors, errors
        assert "my_data" in at.session_state["user_densities"]
        assert any("created" in s.value for s in at.success)
    else:
        assert any(expect in e and name.split(".")[0] in e for e in errors), (expect, errors)
        assert "my_data" not in at.session_state.get("user_densities", {})
        if "[x]" in body.decode("latin-1"):
            assert any("\\[x\\]" in e for e in errors)  # the cell's link is shown as text


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ('{"weights": [1,', "not valid JSON: Expecting value at line 1"),
        ("/etc/passwd", "not valid JSON"),  # a path is text here, never a file to read
        ("", "no JSON given"),
        ('{"weights": [1], "means": [[1e300, 0]], "covs": [[[1, 0], [0, 1]]]}', "means must lie within"),
        ('{"weights": [1], "means": [["a", 0]], "covs": [[[1, 0], [0, 1]]]}', "numbers"),
    ],
)
def test_typed_json_mixture_messages(text, expect):
    at = open_page("train", {}, data_source="JSON mixture")
    at.text_area(key="mixture_text").set_value(text)
    at.button(key="json_go").click().run()
    assert not at.exception
    assert any(expect in e.value for e in at.error), [e.value for e in at.error]


def test_typed_json_mixture_makes_an_exact_density_for_the_flows_page():
    at = open_page("train", {}, data_source="JSON mixture")
    at.button(key="json_go").click().run()  # the example spec in the box
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.switch_page("views/flows.py")
    at.session_state["flows.density"] = "mine: my_data"
    at.session_state["flows.steps"] = 3
    at.session_state["flows.n"] = 60
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    spec = chart_specs(at)[0]
    assert "exact score" in spec["layout"]["title"]["text"]


def test_a_name_with_markup_is_shown_as_plain_text():
    at = open_page("train", {}, data_source="JSON mixture")
    at.sidebar.text_input(key="data_name").set_value("[x](http://e) <b>").run()
    at.button(key="json_go").click().run()
    assert not at.exception
    (name,) = at.session_state["user_densities"]
    assert name.startswith("x_http_e") and not set(name) & set("[]()<>:*`$")
    assert any("using 'x" in c.value for c in at.sidebar.caption)
    assert not any("](http" in s.value for s in at.success)


# --------------------------------------------------------------------------- faults
def test_an_exception_inside_a_page_is_caught_at_the_boundary(monkeypatch):
    monkeypatch.setenv("GEOFLOW_STRICT_PAGES", "0")
    import sources

    def broken(*a, **k):
        raise ZeroDivisionError("an internal slip")

    monkeypatch.setattr(sources, "density_key", broken)  # called by every run of the page
    at = open_page("flows", SMALL["flows"])
    assert not at.exception
    assert any("internal problem" in e.value and "an internal slip" in e.value for e in at.error)
    assert len(at.sidebar.slider) > 0  # the page's controls are there
    monkeypatch.undo()
    monkeypatch.setenv("GEOFLOW_STRICT_PAGES", "0")
    at.switch_page("views/maths.py").run()  # the rest of the app keeps working
    assert not at.exception and not any("internal problem" in e.value for e in at.error)


def test_reruns_and_page_switches_pass_the_boundary():
    """st.rerun / st.switch_page are Streamlit's control flow, not errors: they still work."""
    at = open_page("flows", SMALL["flows"])
    at.button(key="step_fwd").click().run()
    assert not at.exception and at.session_state["frame"] == 1


@pytest.fixture
def pretrained_copy(tmp_path, monkeypatch):
    """A copy of pretrained/ the library reads instead (the shipped files are never touched)."""
    copy = tmp_path / "pretrained"
    shutil.copytree(ckpt.PRETRAINED_DIR, copy, ignore=shutil.ignore_patterns("flows"))
    monkeypatch.setattr(ckpt, "PRETRAINED_DIR", copy)
    monkeypatch.setattr(ckpt, "MANIFEST", copy / "MANIFEST.json")

    def clear():
        run_api.pretrained_pair.cache_clear()
        run_api.pretrained_problem.cache_clear()
        cache.clear()

    clear()
    yield copy
    clear()


def _manifest(copy: Path) -> dict:
    return json.loads((copy / "MANIFEST.json").read_text())["models"]


def test_a_corrupt_pretrained_file_marks_only_that_model(pretrained_copy):
    models = _manifest(pretrained_copy)
    if "eight_gaussians-vp" not in models or "asymmetric-vp" not in models:
        pytest.skip("needs the shipped eight_gaussians-vp and asymmetric-vp")
    f = pretrained_copy / models["eight_gaussians-vp"]["file"]
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = b"\x00" * 64
    f.write_bytes(bytes(raw))
    at = open_page("flows", SMALL["flows"])  # the app starts; the page names the model and the reason
    notes = [w.value for w in at.warning]
    assert any("eight\\_gaussians-vp" in w or "eight_gaussians-vp" in w for w in notes), notes
    assert any("sha256" in w or "corrupt" in w for w in notes), notes
    spec = chart_specs(at)[0]
    assert "exact score" in spec["layout"]["title"]["text"]  # auto fell back to the exact score
    assert run_api.pretrained_available("asymmetric-vp")  # the others work
    other = open_page("flows", {**SMALL["flows"], "density": "asymmetric"})
    spec = chart_specs(other)[0]
    assert "pretrained asymmetric-vp" in spec["layout"]["title"]["text"]
    pinned = open_page("flows", {**SMALL["flows"], "score": "pretrained"})  # asked for it by name
    assert any("unavailable" in e.value and "sha256" in e.value for e in pinned.error), [
        e.value for e in pinned.error
    ]


def test_a_mismatched_projection_file_is_named_and_tweedie_still_works(pretrained_copy):
    models = _manifest(pretrained_copy)
    if "two_moons-vp-proj" not in models or "circles-vp" not in models:
        pytest.skip("needs the shipped two_moons-vp-proj and circles-vp")
    # a score network where the projection network should be, with a manifest that matches the file
    proj = pretrained_copy / models["two_moons-vp-proj"]["file"]
    shutil.copy(pretrained_copy / models["circles-vp"]["file"], proj)
    full = json.loads((pretrained_copy / "MANIFEST.json").read_text())
    full["models"]["two_moons-vp-proj"]["sha256"] = ckpt.sha256(proj)
    (pretrained_copy / "MANIFEST.json").write_text(json.dumps(full))
    at = open_page("projection", {"density": "two_moons", "projection": "learned", "steps": "3", "n": "100"})
    msgs = messages(at)
    assert any("two\\_moons-vp-proj" in m or "two_moons-vp-proj" in m for m in msgs), msgs
    ok = open_page("projection", {"density": "two_moons", "projection": "tweedie", "steps": "3", "n": "100"})
    assert not ok.error, [e.value for e in ok.error]


def test_an_unreadable_manifest_does_not_stop_the_app(pretrained_copy):
    (pretrained_copy / "MANIFEST.json").write_text("{not json")
    at = open_page("flows", SMALL["flows"])
    assert any("MANIFEST" in w.value for w in at.warning), [w.value for w in at.warning]
    spec = chart_specs(at)[0]
    assert "exact score" in spec["layout"]["title"]["text"]
    img = open_page("images", SMALL["images"])
    assert not img.exception and (img.error or img.info)


def test_a_training_whose_session_ended_stops_and_frees_its_slot(monkeypatch):
    monkeypatch.setattr(
        training, "SLOTS", training.serving.WorkQueue(1, "trainings", poll=0.02, poll_calls=True)
    )
    monkeypatch.setattr(training, "LIVENESS_EVERY_S", 0.1)
    pts = np.random.default_rng(0).normal(size=(100, 2))
    job = training.Job("gone", training.MAX_TRAIN_STEPS, with_projection=False)
    waiting = training.Job("next", 30, with_projection=False)
    t = threading.Thread(target=training.run_job, args=(job, pts, "vp", 16))
    t.start()
    deadline = time.time() + 30
    while job.phase != "score network" and time.time() < deadline:
        time.sleep(0.02)
    t2 = threading.Thread(target=training.run_job, args=(waiting, pts, "vp", 16))
    t2.start()
    time.sleep(0.2)
    assert waiting.queued == 1  # the one slot is taken
    t_closed = time.monotonic()
    job.heartbeat = job.last_seen = t_closed - training.HEARTBEAT_S - 1  # the tab closed: no poller
    while (waiting.queued or not waiting.done) and time.time() < deadline + 60:
        training.touch(waiting)  # this one's session is still there
        time.sleep(0.02)
    t.join(10)
    t2.join(10)
    assert job.done and job.gone and job.result is None and "ended" in job.error
    assert waiting.done and not waiting.error and waiting.result is not None  # its slot was freed
    assert not training.SLOTS.busy()


def test_a_queued_training_whose_session_ended_leaves_the_queue(monkeypatch):
    monkeypatch.setattr(
        training, "SLOTS", training.serving.WorkQueue(1, "trainings", poll=0.02, poll_calls=True)
    )
    pts = np.random.default_rng(0).normal(size=(100, 2))
    busy = training.Job("busy", training.MAX_TRAIN_STEPS, with_projection=False)
    t = threading.Thread(target=training.run_job, args=(busy, pts, "vp", 16))
    t.start()
    time.sleep(0.3)
    queued = training.Job("queued", 30, with_projection=False)
    queued.heartbeat = time.monotonic() - training.HEARTBEAT_S - 1
    training.run_job(queued, pts, "vp", 16)  # returns once it sees its session is gone
    assert queued.done and queued.result is None and "ended" in queued.error
    assert training.SLOTS.waiting == 0
    busy.stop.set()
    t.join(30)
    assert busy.done and not training.SLOTS.busy()


def test_the_server_config_never_shows_tracebacks():
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["client"]["showErrorDetails"] == "none"
