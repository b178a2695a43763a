PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-large lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,serve,world,ray,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) bench/demo.py

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest -q

# ruff, and hadolint on the Dockerfile (no Docker daemon needed; tests/test_dockerfile.py runs it too)
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/hadolint Dockerfile

test-large: $(STAMP)
	$(PY) -m pytest -q -m large

clean:
	rm -rf $(VENV) build *.egg-info
