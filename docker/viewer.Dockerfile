# The Streamlit viewer: streamlit run app/viewer.py on port 8501.
# Build from the repository root:  docker build -f docker/viewer.Dockerfile -t lggseg-viewer .
# It talks to the API at $LGGSEG_API_URL (compose sets http://api:8000); without it, it runs the
# bundled model in its own process. CPU by default; BASE_IMAGE / PIP_EXTRA_INDEX_URL as for the API.
# .streamlit/config.toml (upload limit, XSRF on, no Deploy button) applies: streamlit starts in WORKDIR.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /srv/lggseg
# The install of the README/Makefile (pip + constraints.txt), with only the extra this image runs.
COPY pyproject.toml constraints.txt README.md ./
COPY analysis ./analysis
COPY app ./app
COPY data ./data
COPY inference ./inference
COPY models ./models
COPY training ./training
COPY .streamlit ./.streamlit
RUN pip install -c constraints.txt ".[viewer]" \
    && useradd --create-home --uid 10001 lggseg

USER lggseg
ENV STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    STREAMLIT_SERVER_HEADLESS=true
EXPOSE 8501
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]
CMD ["streamlit", "run", "app/viewer.py", "--server.address", "0.0.0.0", "--server.port", "8501"]
