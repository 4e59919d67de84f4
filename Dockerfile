# syntax=docker/dockerfile:1
# The Cascade platform image: one image runs the operator (`cascade operator`), the graph's Ray
# Serve application, the model build (`cascade build`) and the local Triton (`cascade triton`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: install the package and its dependencies into a virtualenv ---------------------
FROM ${PYTHON_IMAGE} AS builder

# torch==2.13.0 from this index is the CPU build; PyPI's Linux wheel pulls several GB of CUDA.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
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
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" "./[train]" \
    && python -c "import contract, inference, operators, training, ab_router"

# ---- runtime: the virtualenv on a slim Python, as an unprivileged user --------------------------
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 cascade \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin cascade

COPY --from=builder /opt/venv /opt/venv

# Triton from nvidia-pytriton needs the wheel's bundled libraries and the interpreter's LIBDIR
# (/usr/local/lib in this image) on LD_LIBRARY_PATH, and the venv's bin first on PATH: its
# python-backend stub finds Python there.
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia_pytriton.libs:/usr/local/lib \
    RAY_USAGE_STATS_ENABLED=0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp

WORKDIR /tmp
USER 10001:10001

# 8000: HTTP (graph, Open Inference Protocol, /v1/recommend, /metrics); 9000: gRPC;
# 8080: the operator's metrics.
EXPOSE 8000 9000 8080

ENTRYPOINT ["cascade"]
CMD ["--help"]
