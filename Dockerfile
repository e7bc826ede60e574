# geoflow: the Streamlit app on the shipped pretrained models, CPU only.
#   docker build -t geoflow .
#   docker run --rm -p 8501:8501 geoflow        # then open http://localhost:8501
# requirements.txt pins torch exactly (torch==2.13.0); installing it as is keeps the image reproducible.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    PYTHONPATH=/app

WORKDIR /app

# dependencies first: this layer is reused while only the code changes
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY geoflow/ geoflow/
COPY app/ app/
COPY pretrained/ pretrained/
COPY .streamlit/ .streamlit/
# the package runs from /app (PYTHONPATH): geoflow finds pretrained/ next to itself
RUN useradd --create-home --uid 10001 geoflow

USER 10001
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read().strip() == b'ok' else 1)"]

CMD ["streamlit", "run", "app/streamlit_app.py", "--server.port", "8501", "--server.address", "0.0.0.0", "--server.headless", "true"]
