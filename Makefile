# The two set-up commands: `make demo` and `make test` (see README).
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.rlaif-installed
# CPU wheel of torch when no CUDA GPU is present (a plain `torch` requirement
# would pull a multi-GB CUDA build). Override with `make TORCH_SPEC=... demo`.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint install bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA GPU found: installing the default torch build"; \
	elif ! $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "no CUDA GPU: installing the CPU torch wheel ($(TORCH_SPEC))"; \
		$(PY) -m pip install -q "$(TORCH_SPEC)"; \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rlaif run pipelines/quickstart.yaml
	@echo "report: runs/quickstart/report.md (figures: runs/quickstart/report.json)"

test: $(STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check rlaif tests bench data

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/quickstart.py

clean:
	rm -rf runs .pytest_cache
