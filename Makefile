# batch-monitor: the two commands a newcomer needs are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test soak bench lint clean

venv: $(STAMP)

# Re-install only when the project's dependencies change; otherwise this is a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/batch-monitor demo $(DEMO_ARGS)

test: venv
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# The long versions of the reliability suites (tests/reliability); their figures are printed
# at the end and written to reports/reliability/.
soak: venv
	MONITOR_SOAK=1 $(BIN)/python -m pytest -n 2 --dist loadfile tests/reliability $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m bench

lint: venv
	$(BIN)/ruff check monitor tests bench alembic grafana prometheus
	$(BIN)/ruff format --check monitor tests bench alembic grafana prometheus
	$(BIN)/mypy

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
