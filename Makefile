# Bootstraps .venv from scratch on first use, then runs pytest from the checkout.
PYTHON ?= python3
VENV ?= .venv
ARGS ?=

.PHONY: drills test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[suite]'
	touch $@

## Run the drill suite on the embedded defaults; writes reports/out/<run>/report.html
drills: $(VENV)/.installed
	$(VENV)/bin/python -m pytest drills $(ARGS)

## Run the unit and integration tests
test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest tests $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) reports/out .pytest_cache
