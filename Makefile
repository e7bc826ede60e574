# Two commands on a fresh machine: `make run` (the app on the shipped models) and `make test`.
# Both set up .venv first if needed (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
K ?= 2
ADDRESS ?= 127.0.0.1
STAMP := $(VENV)/.geoflow-installed

.PHONY: setup run test lint browser nginx serve-replicas bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

run: setup
	$(VENV)/bin/streamlit run app/streamlit_app.py --server.port $(PORT) --server.address 0.0.0.0

# Debian chromium for the real-browser test and kaleido (static export); needs root + apt.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium; browser tests will be skipped"; \
	  else echo "chromium not installed (needs root); browser tests will be skipped"; fi; \
	fi

# Debian nginx for `make serve-replicas` and its test (tests/test_replicas.py); needs root + apt.
nginx:
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null) \
	      || echo "could not install nginx; the replica test will be skipped"; \
	  else echo "nginx not installed (needs root); the replica test will be skipped"; fi; \
	fi

# K app replicas on loopback ports behind nginx with sticky sessions (deploy/serve.sh; Ctrl-C stops all).
# The proxy listens on $(ADDRESS):$(PORT); ADDRESS=0.0.0.0 serves a classroom.
serve-replicas: setup nginx
	bash deploy/serve.sh --replicas $(K) --port $(PORT) --address $(ADDRESS) --streamlit $(VENV)/bin/streamlit

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

test: setup browser nginx lint
	$(PY) -m pytest -q -n 2 --dist loadgroup

bench: setup
	$(PY) -m geoflow bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
