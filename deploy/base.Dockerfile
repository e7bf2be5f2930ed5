# HealthFed runtime base: Python 3.11 and the pinned runtime packages, shared by the silo and
# aggregator images (deploy/silo/Dockerfile, deploy/aggregator/Dockerfile build FROM it), so
# the big dependency layer is built and stored once. Build from the repository root:
#   docker build -f deploy/base.Dockerfile -t healthfed/base:0.1.0 .
# From a locally made Debian base instead of Docker Hub (no registry reachable; see
# deploy/README.md "Building without a registry"):
#   podman build --build-arg BASE_IMAGE=localhost/debian-bookworm-python:3.11 -f deploy/base.Dockerfile ...
#
# The default base is pinned by digest (a tag can be re-pointed; a digest cannot). Any base
# with Python 3.11 at `python`, the venv module and useradd works.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/runtime-lock.txt requirements/tff.txt /tmp/requirements/
# Two-step install (README "Installing"), runtime packages only, both --no-deps so the image
# holds exactly the pinned set. Then two removals in the same layer:
# - tensorflow/include: C++ headers for building custom ops (229 MB), never used at runtime;
# - tensorflow_federated/data/worker_binary (294 MB): TFF's remote-execution worker, which
#   listens without authentication; HealthFed never starts it (healthfed_common/tf_graph.py
#   runs the computations in-process), and a binary that is absent cannot be started
#   (an inert placeholder replaces it below).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps -r /tmp/requirements/runtime-lock.txt \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps -r /tmp/requirements/tff.txt \
    && rm -rf /opt/venv/lib/python3.11/site-packages/tensorflow/include \
              /opt/venv/lib/python3.11/site-packages/tensorflow_federated/data/worker_binary

FROM ${BASE_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/state \
    MPLCONFIGDIR=/tmp/matplotlib
# Non-root user with a fixed uid, so hospital IT can give /state to uid 10001 and make /data
# readable by it; the role images switch to it and never run as root.
RUN groupadd --system --gid 10001 healthfed \
    && useradd --system --uid 10001 --gid healthfed --no-create-home --home-dir /state \
       --shell /usr/sbin/nologin healthfed \
    && mkdir -p /state /opt/healthfed \
    && chown healthfed:healthfed /state
COPY --from=builder /opt/venv /opt/venv
# TFF 0.87 insists at import (tensorflow_federated/__init__.py sets its local C++ context) that
# worker_binary is a file. An empty placeholder without execute permission passes that check
# and cannot be started: anything that tried would get "permission denied", not a listening
# server. The container smoke test checks both (size 0, mode 0444).
RUN : > /opt/venv/lib/python3.11/site-packages/tensorflow_federated/data/worker_binary \
    && chmod 0444 /opt/venv/lib/python3.11/site-packages/tensorflow_federated/data/worker_binary
WORKDIR /opt/healthfed
