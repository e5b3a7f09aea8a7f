"""pytest-html customisation: drill columns, environment, and drill-results.json beside the report."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fixtures.drill import drill_key
from reports.render import header_cells, row_cells

run_dir_key = pytest.StashKey[Path]()
records_key = pytest.StashKey[list[dict]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Where the run's report goes."""
    parser.getgroup("pgdrill").addoption(
        "--report-dir", default=None, help="directory for report.html and drill-results.json (default reports/out/<run>)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Point pytest-html at reports/out/<run>/report.html (self-contained) unless --html was given."""
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"
    if config.option.htmlpath:
        run_dir = Path(config.option.htmlpath).resolve().parent
    else:
        run_dir = Path(config.getoption("report_dir") or Path(config.rootpath) / "reports" / "out" / run_id)
        config.option.htmlpath = str(run_dir / "report.html")
    config.option.self_contained_html = True
    run_dir.mkdir(parents=True, exist_ok=True)
    config.stash[run_dir_key] = run_dir
    config.stash[records_key] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """Attach the drill's figures to its call report, and as JUnit properties."""
    report = yield
    drill = item.stash.get(drill_key, None)
    if drill is not None and report.when == "call":
        record = {"test": item.nodeid, "outcome": report.outcome, **drill.to_record()}
        if report.failed:
            record["reason"] = _one_line(report)
        report.pgdrill = record
        item.config.stash[records_key].append(record)
        for key in ("scenario", "method", "rto_seconds", "target_rto_seconds", "rpo_seconds", "target_rpo_seconds",
                    "lost_commits"):  # fmt: skip
            report.user_properties.append((key, record[key]))
    return report


def _one_line(report: pytest.TestReport) -> str:
    text = getattr(report.longrepr, "reprcrash", None)
    message = text.message if text is not None else str(report.longrepr)
    return message.strip().splitlines()[0] if message.strip() else "failed"


def pytest_html_results_table_header(cells: list[str]) -> None:
    """Drill columns after the test name."""
    cells[2:2] = header_cells()


def pytest_html_results_table_row(report: pytest.TestReport, cells: list[str]) -> None:
    """Drill figures for drill rows, blanks for other tests."""
    cells[2:2] = row_cells(getattr(report, "pgdrill", None))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Add the PostgreSQL version and binaries to the report's Environment table."""
    from pytest_metadata.plugin import metadata_key

    from backup_tools.pgbin import find_pg_bin
    from fixtures.clusters import pg_bin_key

    config = session.config
    try:
        pg = config.stash[pg_bin_key] if pg_bin_key in config.stash else find_pg_bin(config.getoption("pg_bin"))
        config.stash[metadata_key]["PostgreSQL"] = f"{pg.version} ({pg.source})"
        config.stash[metadata_key]["PostgreSQL binaries"] = str(pg.bindir)
    except Exception as e:  # the environment table must not break the run
        config.stash[metadata_key]["PostgreSQL"] = f"not found: {e}"
    config.stash[metadata_key]["Scale"] = str(config.getoption("scale"))
    config.stash[metadata_key]["Seed"] = str(config.getoption("seed"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write drill-results.json beside report.html."""
    config = session.config
    records = config.stash.get(records_key, None)
    if records is None:
        return
    doc = {"schema_version": 1, "finished_at": datetime.now(UTC).isoformat(), "drills": records}
    path = config.stash[run_dir_key] / "drill-results.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """Say where the report is."""
    if run_dir_key in config.stash:
        terminalreporter.write_line(f"pgdrill: report and results in {config.stash[run_dir_key]}")
