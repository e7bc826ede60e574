# geoflow: the Streamlit app on the shipped pretrained models.
#   docker build -t geoflow .                                   # CPU torch (default)
#   docker run --rm -p 8501:8501 geoflow                        # then open http://localhost:8501
# GPU host (NVIDIA driver + container toolkit; the CUDA wheels bundle the CUDA runtime):
#   docker build --build-arg TORCH_VARIANT=cu126 -t geoflow:cuda .
#   docker run --rm --gpus all -p 8501:8501 geoflow:cuda
# Only requirements.txt (runtime pins) is installed; test and lint tools live in requirements-dev.txt.

# ---- dependencies: a virtual environment built once, reused while only the code changes ----
FROM python:3.11-slim AS deps

# torch comes from the PyTorch wheel index of this variant: cpu, or a CUDA one such as cu126.
# TORCH_VERSION must equal the torch pin of requirements.txt (tests/test_docker.py checks it).
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# torch first, from its own index: the default (PyPI) Linux torch is the multi-GB CUDA build.
# requirements.txt then finds torch==2.13.0 already satisfied (2.13.0+cpu matches the pin).
RUN python -m venv /opt/venv \
    && pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "torch==${TORCH_VERSION}"

WORKDIR /build
COPY requirements.txt ./
RUN pip install -r requirements.txt

# ---- runtime: the venv, the code and the pretrained models; nothing is downloaded at run time ----
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app

# Chromium for the exports: PNG/SVG/GIF/MP4 are rendered by kaleido from the chart's own plotly figure
# (about 250 MB; WITH_CHROMIUM=0 leaves it out, and the app then says that exports need it).
ARG WITH_CHROMIUM=1
# Debian's chromium version moves with the security archive; a pin would break the build within weeks
# hadolint ignore=DL3008
RUN if [ "$WITH_CHROMIUM" = "1" ]; then \
        apt-get update && apt-get install -y --no-install-recommends chromium \
        && rm -rf /var/lib/apt/lists/*; \
    fi

RUN useradd --create-home --uid 10001 geoflow

COPY --from=deps /opt/venv /opt/venv

WORKDIR /app
# the package runs from /app (PYTHONPATH): geoflow finds pretrained/ next to itself
COPY geoflow/ geoflow/
COPY app/ app/
COPY pretrained/ pretrained/
COPY .streamlit/ .streamlit/

USER 10001
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read().strip() == b'ok' else 1)"]

CMD ["streamlit", "run", "app/streamlit_app.py", "--server.port", "8501", "--server.address", "0.0.0.0", "--server.headless", "true"]
