# The inference API: python -m inference.serve on port 8000, with the bundled model.
# Build from the repository root:  docker build -f docker/api.Dockerfile -t lggseg-api .
# CPU by default. For a CUDA base, pass a base image that has Python 3.11 and a torch index:
#   --build-arg BASE_IMAGE=<cuda image with python3.11> \
#   --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# torch==2.13.0 in constraints.txt resolves to the CPU wheel from this index (no multi-GB CUDA build).
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
RUN pip install -c constraints.txt ".[serve]" \
    && useradd --create-home --uid 10001 lggseg

USER lggseg
ENV LGGSEG_SERVE_DEVICE=cpu
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
# SIGTERM (docker stop) -> uvicorn lets requests in flight finish, then exits.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "inference.serve", "--host", "0.0.0.0", "--port", "8000", "--graceful-timeout", "25"]
