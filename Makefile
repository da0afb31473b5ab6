# Two commands do all set-up on a fresh machine: `make run` (the main job) and `make test`.
# The venv is built by uv from the committed uv.lock (about 1 minute; pip takes ~4, see STACK.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
UV := .uvtool/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_COMPILE_BYTECODE := 1
export UV_LINK_MODE := copy
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := true

.PHONY: run test lint clean stack-up stack-down stack-status

$(UV):
	$(PYTHON) -m venv .uvtool
	.uvtool/bin/pip install --quiet uv

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --extra dev --python $(PYTHON)
	-$(VENV)/bin/python -m flows.sqlite_store  # MLflow's schema migrated once per venv; a speed-up only, so never fatal
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/unlearn run

test: $(VENV)/.installed
	$(VENV)/bin/ruff check unlearning flows tests bench
	$(VENV)/bin/python -m pytest

# The local distributed stack (flows/stack.py): PostgreSQL, the MLflow server on it, a Dask scheduler and
# workers, a DVC remote folder, all in .stack/; `set -a; . .stack/env; set +a` points the pipeline at it.
stack-up: $(VENV)/.installed
	$(VENV)/bin/python -m flows.stack up

stack-down: $(VENV)/.installed
	$(VENV)/bin/python -m flows.stack down

stack-status: $(VENV)/.installed
	$(VENV)/bin/python -m flows.stack status

clean:
	rm -rf $(VENV) .uvtool
