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

.PHONY: run test lint clean stack-up stack-down stack-status digests

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

# Issue #12's tables, one per recipe, joined from the frontier runs in bench/results (oldest first: a later
# run's point replaces an earlier one's). Reads JSON only; no training.
R := bench/results
MNIST5 := $(addprefix $(R)/frontier-mnist-cnn-5ep,.json -unsir256.json -gkt.json -rest.json -random-rest.json \
	-mnemonic.json -cal-rest.json -random-salun-scrub.json -badt-cal.json -neggrad-ssd.json -random-neggrad.json \
	-random-cal-rest.json -emmn-deep.json -finetune.json -badt-deep.json -rl-scrub.json -random-salun.json \
	-salun.json)
digests: $(VENV)/.installed
	for m in mlp cnn; do $(VENV)/bin/python bench/frontier_digest.py --out $(R)/digest-digits-$$m.md --runs \
		$(R)/frontier-digits-$$m-unsir256.json $(R)/frontier-digits-$$m-neggrad.json $(R)/frontier-digits-$$m.json \
		$(R)/frontier-digits-$$m-mnemonic.json > /dev/null || exit 1; done
	$(VENV)/bin/python bench/frontier_digest.py --out $(R)/digest-mnist-cnn-5ep.md --runs $(MNIST5) > /dev/null
	@echo "written: $(R)/digest-digits-mlp.md $(R)/digest-digits-cnn.md $(R)/digest-mnist-cnn-5ep.md"

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
