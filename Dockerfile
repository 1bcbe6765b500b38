# syntax=docker/dockerfile:1
# One image for every Varde service (gateway, node, Flower SuperLink): the command says which.
# Build:  docker build -t varde:0.1.0 .          Run: docker run --rm varde:0.1.0 --help
# compose.yaml builds and runs it; docs/OPERATIONS.md describes the deployment.
#
# The base is pinned by version (and can be pinned by digest: --build-arg
# PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> after `docker pull`); the build
# stage makes a virtual environment with Varde and its runtime dependencies only (no test or
# lint tools), the final stage copies that environment and nothing else: no compiler, no pip,
# no source tree, no keys, tokens or certificates (those are mounted at run time).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY varde ./varde
COPY varde_client ./varde_client
COPY gateway ./gateway
COPY nodes ./nodes
COPY launcher ./launcher
# The project is built into a wheel, then installed with its dependencies from prebuilt wheels
# only (--only-binary): no compiler is needed, not even here. psycopg is the gateway's
# PostgreSQL driver (extra "postgres"). pip itself is removed from the environment.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/varde \
    && set -- /wheels/varde-*.whl \
    && /opt/varde/bin/pip install --only-binary=:all: "$1[postgres]" \
    && /opt/varde/bin/pip uninstall --yes pip \
    && find /opt/varde -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="varde" \
      org.opencontainers.image.description="Federated cancer-registry gateway and node" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, unprivileged uid/gid (10001) that compose.yaml and bind-mounted directories use.
# The base image's own pip and setuptools go too: the final image installs nothing.
RUN python -m pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 10001 varde \
    && useradd --system --uid 10001 --gid varde --home-dir /var/lib/varde --shell /usr/sbin/nologin varde \
    && mkdir -p /var/lib/varde \
    && chown varde:varde /var/lib/varde
COPY --from=build /opt/varde /opt/varde
ENV PATH=/opt/varde/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /var/lib/varde
USER 10001:10001
ENTRYPOINT ["varde"]
CMD ["--help"]
