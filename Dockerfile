# captchalab serve: the HTTP API on ONNX Runtime. Base install + [serve] only: no TensorFlow.
#   docker build -t captchalab-serve .
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/runs/mine:/model:ro" captchalab-serve
# The run folder (or a folder holding model.onnx) is mounted read-only at /model; docs/serving.md.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# The package is this checkout (its dependencies' lower bounds are in pyproject.toml): nothing to pin here.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[serve]" \
    && rm -rf /src \
    && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin captchalab

USER 10001:10001
WORKDIR /home/captchalab
VOLUME ["/model"]
EXPOSE 8000

# The image has no curl: Python asks /healthz itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Inside a container the server must listen on every interface; publish the port on 127.0.0.1 to keep it local.
ENTRYPOINT ["captchalab", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--model", "/model"]
