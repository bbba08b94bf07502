# Two commands on a fresh machine: `make demo` and `make test`. Both (re)create .venv from the project's own files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch; pip finds the wheel locally where one is provided.
TORCH := torch==2.13.0
JOBS ?= 2

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt requirements/dev.txt requirements/serve.txt requirements/rtx.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -r requirements/lock.txt -r requirements/dev.txt -r requirements/serve.txt
	-$(PY) -m pip install -q -r requirements/rtx.txt || echo "TensorRT-RTX wheels unavailable: its build checks will skip"
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: setup
	$(PY) -m videorope_trt.cli demo --out demo-out

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(JOBS) -p no:cacheprovider

clean:
	rm -rf $(VENV) demo-out
