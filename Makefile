# HealthFed: `make demo` runs the main job, `make test` the test suite. Both create or
# reuse .venv first. TFF 0.87 needs a two-step install (see requirements/tff.txt).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.healthfed-installed
PYTEST_ARGS ?=

.PHONY: venv demo test test-slow test-all lint bench clean images test-containers

venv: $(STAMP)

$(STAMP): requirements/lock.txt requirements/tff.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/tff.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

demo: $(STAMP)
	$(BIN)/python -m pipelines.demo --out runs/demo

# The Helm chart test renders with Helm's Go SDK and validates against the Kubernetes schemas:
# pinned tools in a venv of their own (deploy/helm/tools-requirements.txt), not the project's.
HELM_TOOLS := build/helm-tools/.installed

$(HELM_TOOLS): deploy/helm/tools-requirements.txt
	@test -x build/helm-tools/bin/python || $(PYTHON) -m venv build/helm-tools
	build/helm-tools/bin/pip install --quiet --disable-pip-version-check -r deploy/helm/tools-requirements.txt
	@touch $@

# Two pytest-xdist workers, each test handed out on its own and an idle worker taking queued tests
# from the other (worksteal): the federation tests spend much of their time waiting on deadlines
# and processes, which the other worker fills. Measured on 2 cores, each run beside the same
# background benchmark: 8 min 57 s against 15 min 28 s serially. More workers run more
# federations (3-4 GB each) at once; TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: $(STAMP) $(HELM_TOOLS)
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The slow set: end-to-end federations that take minutes each (aggregator killed at five points,
# SecAgg+ with five silos, imaging, PostgreSQL, the demo, a Fed-Heart-Disease run, containers'
# entrypoints). CI runs it after `make test` so it cannot rot unseen.
test-slow: $(STAMP) $(HELM_TOOLS)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-all: $(STAMP) $(HELM_TOOLS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Container images (deploy/): the shared base, then the silo and aggregator images, with podman
# or docker, whichever works here (deploy/test/container_smoke.py picks; see deploy/README.md).
images: $(STAMP)
	$(BIN)/python deploy/test/container_smoke.py images

# Builds the images and runs deploy/README.md's runbook: a three-hospital compose federation
# with secure aggregation and DP, preflight refusals, health, a silo restarted mid-plan, down -v.
# Writes bench-results/images.json. Fails (never skips) where containers cannot run.
test-containers: $(STAMP)
	$(BIN)/python deploy/test/container_smoke.py smoke

# Import contracts (import-linter), then types: mypy strict for healthfed_common, silo_node,
# aggregator and compliance, default checks for pipelines (pyproject.toml [tool.mypy]).
# .ci/run runs it after the tests.
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) runs build *.egg-info
