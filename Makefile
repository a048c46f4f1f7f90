# meshchat — developer entry points. `make test` is what CI runs (through .ci/run).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -q
# The suite runs on 3 workers, a test file each at a time (the net tests mostly wait on
# timers; the loopback mDNS tests of one file must not hear another's). Serial: PYTEST_PARALLEL=
PYTEST_PARALLEL ?= -n 3 --dist loadfile
BENCH_ARGS ?=
ARGS ?=
LINT_PATHS := $(wildcard meshchat tests bench examples)

.PHONY: install system-packages run test lint bench clean

install: $(STAMP)

# Re-runs only when pyproject.toml changes (the package itself is installed editable).
$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-packages
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	    { echo "meshchat needs Python 3.11+; $(PYTHON) is $$($(PYTHON) -V 2>&1)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# iproute2 and tcpdump for the namespace lab in tests/net; venv support for `python3 -m venv`.
system-packages:
	@missing=""; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v tcpdump >/dev/null 2>&1 || missing="$$missing tcpdump"; \
	command -v tmux >/dev/null 2>&1 || missing="$$missing tmux"; \
	command -v unshare >/dev/null 2>&1 || missing="$$missing util-linux"; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "apt-get install$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	    echo "warning: missing system packages:$$missing (install them as root)" >&2; \
	fi

run: install
	$(BIN)/meshchat start $(ARGS)

# The whole suite runs in a fresh network namespace: nothing can leak onto the real network.
test: install
	sh scripts/in-netns.sh $(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# Both linters run even when the first fails.
lint: install
	@status=0; \
	echo "mypy --strict meshchat"; $(BIN)/mypy --strict meshchat || status=1; \
	echo "mypy --strict bench"; $(BIN)/mypy --strict bench || status=1; \
	echo "ruff check $(LINT_PATHS)"; $(BIN)/ruff check $(LINT_PATHS) || status=1; \
	exit $$status

bench: install
	sh scripts/in-netns.sh $(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
