# Bootstraps .venv from scratch on first use, then runs pytest from the checkout.
PYTHON ?= python3
VENV ?= .venv
ARGS ?=

.PHONY: drills test lint clean

$(VENV)/.installed: pyproject.toml
	@echo "pgdrill: first run: creating $(VENV) and installing pgdrill with its suite dependencies"
	@echo "pgdrill: (psycopg, embedded PostgreSQL 18, moto, matplotlib ...; usually 1-3 minutes, once)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[suite]'
	@echo "pgdrill: $(VENV) is ready"
	touch $@

## Run the drill suite on the embedded defaults; writes reports/out/<run>/report.html
drills: $(VENV)/.installed
	@echo "pgdrill: running the drills (about 4 minutes at the default scale; one line per drill as it ends)"
	$(VENV)/bin/python -m pytest drills $(ARGS)

## Run the unit and integration tests
test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest tests $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) reports/out .pytest_cache
