# Two entry points (see README): `make demo` trains the paper's MLP on Fashion-MNIST at
# η/S = 0.005/640; `make test` runs the test suite. Both first install everything they need:
# a virtual environment in .venv with lrbs_tf (editable) and its test extras, and the Debian
# package dataset-fashion-mnist when running as root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test test-all install data

demo: install data
	$(PY) experiments/run.py --ratio 0.005/640 --overwrite

# Two pytest workers, one test file each at a time (module fixtures run once). Tests marked
# slow (multi-process fault injection, the ResNet-56 run: minutes each) run with `make test-all`.
MARK ?= not slow
test: install data
	$(VENV)/bin/ruff check lrbs_tf experiments tools tests results
	$(VENV)/bin/ruff format --check lrbs_tf experiments tools tests results
	$(PY) -m pytest -n 2 --dist loadfile -m "$(MARK)"

test-all:
	$(MAKE) test MARK=""

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

data:
	@if [ -f $(FMNIST) ] || [ -n "$$LRBS_DATA_DIR" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST is not installed: run 'sudo apt-get install dataset-fashion-mnist'," \
	       "or set LRBS_DATA_DIR to a folder with its idx .gz files (tensorflow-datasets will" \
	       "try to download it otherwise)"; \
	fi
