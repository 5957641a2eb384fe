# The README's commands. Each works from a fresh clone on a machine with only Python 3.11.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned and installed first: that CPU wheel is on the build machines' disk, and any
# other version would pull a multi-GB CUDA build. Users get `torch>=2.2` from pyproject.toml.
TORCH  ?= torch==2.13.0

.PHONY: demo test bench lint clean postgres

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/diagnose demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check diagnose tests benchmarks examples
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) -m benchmarks

# A throw-away PostgreSQL server on 127.0.0.1 (Debian's postgresql package; initdb into a temporary
# folder, a free port, deleted on Ctrl-C): prints its URL, for `diagnose tune --storage URL`. The
# tests start their own.
postgres: $(VENV)/.installed
	$(PY) -m diagnose.tune.pg_server

clean:
	rm -rf $(VENV) runs .pytest_cache
