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
# binutils' strip (Debian bookworm's, pinned), for the builder only (see the strip step below):
# the runtime stage is made from the bare base and receives nothing from here but /opt/venv.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binutils=2.40-2 \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/runtime-lock.txt requirements/tff.txt /tmp/requirements/
# Two-step install (README "Installing"), runtime packages only, both --no-deps so the image
# holds exactly the pinned set. The runtime lock pins TensorFlow's CPU-only wheel
# (tensorflow-cpu, same version and Python API as the dev lock's tensorflow: silos and the
# aggregator run on CPU) and leaves out six declared dependencies HealthFed never loads
# (requirements/runtime-lock.txt says which and why). --no-compile: bytecode is written
# below only for the modules the nodes import.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-compile --no-deps -r /tmp/requirements/runtime-lock.txt \
    && /opt/venv/bin/pip install --no-cache-dir --no-compile --no-deps -r /tmp/requirements/tff.txt
# Removals (a separate step, so changing one does not re-download the packages; the builder
# stage's layers never reach the image, only the final /opt/venv does). Each is safe because
# nothing at runtime reads it:
# - tensorflow/include (171 MB): C++ headers for building custom ops, never used at runtime;
# - tensorflow_federated/data/worker_binary (294 MB): TFF's remote-execution worker, which
#   listens without authentication; HealthFed never starts it (healthfed_common/tf_graph.py
#   runs the computations in-process), and a binary that is absent cannot be started
#   (an inert placeholder replaces it below);
# - pyarrow's Arrow Flight RPC (libarrow_flight, libarrow_python_flight, _flight, flight.py;
#   ~25 MB): no pyarrow library or extension module the nodes load links it (readelf NEEDED of
#   lib, _parquet, _dataset*, libarrow_python), and pyarrow imports it only on
#   `import pyarrow.flight`, which nothing here does; pyarrow/include (6 MB) likewise;
# - the test suites shipped inside pandas, numpy, scipy, scikit-learn, matplotlib, pyarrow
#   and psutil (`tests` folders, ~110 MB): run only by pytest, never imported by the package;
# - TensorFlow Probability's JAX and NumPy back ends (tensorflow_probability/substrates/jax and
#   numpy, 34 MB): loaded only through tfp.substrates.jax/numpy, which in this environment only
#   vizier's Gaussian-process designers use; HealthFed never runs vizier (the package
#   `tensorflow_probability.substrates` itself stays: importing TFP imports it).
# Then strip --strip-unneeded on the shared libraries of tensorflow, jaxlib and pyarrow (~300
# MB): it drops their static symbol tables and debug sections (libtensorflow_cc.so.2 548 ->
# 402 MB, xla_extension.so 169 -> 122 MB), keeping the dynamic symbols that loading and linking
# use; a native crash's backtrace names fewer frames. Only these three: their wheels ship their
# libraries as built, whereas the auditwheel-repaired ones (numpy, scipy, scikit-learn, pillow,
# h5py, psycopg-binary: patched by patchelf) are left alone - strip corrupts patched ELF files
# (seen here: scipy's _ufuncs then fails to load, "ELF load command address/offset not
# page-aligned"). Every stripped file is loaded (ctypes) before the step succeeds, and the
# bytecode step after it imports TensorFlow, TFF, JAX and pyarrow from the stripped files.
# Then bytecode: importing the roots the nodes use writes .pyc for exactly the modules they
# load (~115 MB); the rest (~120 MB of .pyc for modules never imported) is not written. The
# runtime stage sets PYTHONDONTWRITEBYTECODE and a read-only root filesystem, so without this
# every container start would recompile TensorFlow's Python (+8-13 s per start, measured).
# The worker binary goes last: TFF's import checks that the file exists.
WORKDIR /opt/venv/lib/python3.11/site-packages
RUN rm -rf tensorflow/include \
              pyarrow/libarrow_flight.so.* pyarrow/libarrow_python_flight.so pyarrow/_flight.* pyarrow/flight.py \
              pyarrow/include \
    && find pandas numpy scipy sklearn matplotlib pyarrow psutil -depth -type d -name tests -exec rm -rf {} + \
    && rm -rf tensorflow_probability/substrates/jax tensorflow_probability/substrates/numpy \
    && find tensorflow jaxlib pyarrow -type f \( -name '*.so' -o -name '*.so.*' \) -exec strip --strip-unneeded {} + \
    && /opt/venv/bin/python -c "import ctypes, pathlib; [ctypes.CDLL(str(f.resolve())) for d in ('tensorflow', \
'jaxlib', 'pyarrow') for f in sorted(pathlib.Path(d).rglob('*.so*')) if f.is_file()]" \
    && TF_CPP_MIN_LOG_LEVEL=2 /opt/venv/bin/python -c "import tensorflow_federated, tensorflow_privacy, \
dp_accounting, pandas, pyarrow.parquet, scipy.stats, sklearn, pydicom, openpyxl, cryptography.x509, grpc, \
pydantic, yaml, rich.console, prometheus_client, psycopg, psutil" \
    && rm -f tensorflow_federated/data/worker_binary

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
