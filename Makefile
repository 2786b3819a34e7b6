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

.PHONY: setup venv deps horovod test test-fast demo bench clean lint-sbatch

setup: deps horovod

$(PY):
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

# Re-installs when pyproject.toml changes.
$(STAMP_DEPS): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test]'
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

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Until the Slurm launcher lands: build the shipped-photo dataset, train B0 on it for two short
# epochs on CPU, evaluate raw and EMA weights, then time training and inference on synthetic data.
demo: setup
	$(PY) -m tools.demo_data runs/demo-data --no-mnist
	$(PY) -m effnet --mode train_and_eval --cfg b0 --mparams num_classes=3 \
	    --data_dir runs/demo-data/photos --train_img_size 64 --eval_img_size 64 \
	    --train_batch_size 16 --eval_batch_size 16 --max_epochs 2 --steps_per_epoch 6 \
	    --warmup_epochs 0 --moving_average_decay 0.9 --log_steps 3 --resume never --model_dir runs/demo
	$(PY) -m effnet --mode benchmark --cfg b0 --train_img_size 64 --train_batch_size 8 \
	    --eval_img_size 64 --eval_batch_size 8 --benchmark_steps 12 --model_dir runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache
