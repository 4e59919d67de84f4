# syntax=docker/dockerfile:1
# Two images, one per role, from the repository root:
#
#   docker build --target serving -t cascade:0.1.0 .           (the default target)
#   docker build --target factory -t cascade-factory:0.1.0 .
#
# serving: `pip install .`, no torch. Runs the operator (`cascade operator`), the graph's Ray Serve
#   application (`cascade serve`), the local Triton (`cascade triton`) and the experiment router.
# factory: the same environment plus the `train` extra (torch CPU, onnx, onnxscript). Runs the
#   model build (`cascade build`); the chart gives it only to the pods that build models.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: the serving install in a virtualenv --------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY training ./training
COPY inference ./inference
COPY ab_router ./ab_router
COPY operators ./operators
COPY benchmarks ./benchmarks
# The serving roles import without torch, and torch is not there to be imported by accident.
RUN pip install --no-cache-dir "./" \
    && python -c "import contract.cli, inference.graph.app, inference.triton.server, operators.controller, ab_router; contract.cli.parser()" \
    && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"

# ---- factory-builder: the serving virtualenv plus the factory's extra ----------------------------
FROM builder AS factory-builder

# torch==2.13.0 from this index is the CPU build; PyPI's Linux wheel pulls several GB of CUDA.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" "./[train]" \
    && python -c "import onnx, onnxscript, training.build"

# ---- runtime: what both images share: a slim Python, the environment, an unprivileged user ----
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 cascade \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin cascade

# Triton from nvidia-pytriton needs the wheel's bundled libraries and the interpreter's LIBDIR
# (/usr/local/lib in this image) on LD_LIBRARY_PATH, and the venv's bin first on PATH: its
# python-backend stub finds Python there.
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia_pytriton.libs:/usr/local/lib \
    RAY_USAGE_STATS_ENABLED=0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp

# Nothing is written outside /tmp (an emptyDir under a read-only root filesystem).
WORKDIR /tmp

# 8000: HTTP (graph, Open Inference Protocol, /v1/recommend, /metrics); 9000: gRPC;
# 8080: the operator's metrics.
EXPOSE 8000 9000 8080

ENTRYPOINT ["cascade"]
CMD ["--help"]

# ---- factory: `cascade build` -------------------------------------------------------------------
FROM runtime AS factory

COPY --from=factory-builder /opt/venv /opt/venv
USER 10001:10001

# ---- serving: everything else; the last stage, so a plain `docker build .` makes it ------------
FROM runtime AS serving

COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
