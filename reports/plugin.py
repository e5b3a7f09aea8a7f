"""pytest-html customisation: drill summary, details, trends, compliance, drill-results.json, history, evidence bundle."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from backup_tools.errors import BackupToolsError
from backup_tools.monitor.history import History, append_history, history_line, parse_history
from backup_tools.pg.run import redact
from fixtures.drill import FAULT_DETECTION, RECOVERY, SYNTHETIC, drill_key, targets_key
from reports import evidence
from reports.controls import SCENARIOS, render_compliance
from reports.history import open_history
from reports.records import build_record, copy_logs, log_sources, relevant_lines
from reports.render import drill_line, header_cells, render_summary, row_cells, why

SCHEMA_VERSION = 2
WORKER_INPUT = "pgdrill_run"
JUNIT_PROPERTIES = ("scenario", "method", "verdict", "rto_seconds", "target_rto_seconds", "rpo_seconds",
                    "target_rpo_seconds", "lost_commits")  # fmt: skip


@dataclass
class Run:
    """State of this run's report."""

    run_id: str
    run_dir: Path
    started_at: str
    history_path: Path
    history: BinaryIO | None = None
    signing_key: Any = None
    git_commit: str = "unknown"
    environment: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    history_lines: list[dict[str, Any]] = field(default_factory=list)
    bad_history_lines: list[int] = field(default_factory=list)
    bundle: evidence.Bundle | None = None
    warnings: list[str] = field(default_factory=list)
    explicit_output: bool = False  # --html, --report-dir or --junitxml given: always write them
    worker: bool = False  # a pytest-xdist worker: it writes logs and artifacts into the controller's run directory only
    no_drills: bool = False  # nothing collected is a drill: no report directory, no evidence line
    summary: dict[str, Any] = field(default_factory=dict)  # evidence-summary.json: what the bundle evidences


run_key = pytest.StashKey[Run]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options for the report, history and evidence bundle."""
    group = parser.getgroup("pgdrill")
    group.addoption(
        "--report-dir", default=None, help="directory for the run's report and evidence (default reports/out/<run>)"
    )
    group.addoption("--history-file", default=None, help="drill history, JSON lines (default reports/history.jsonl)")
    group.addoption(
        "--history-runs", type=int, default=20, help="runs per scenario shown in the trend charts (default 20)"
    )
    group.addoption(
        "--stale-days", type=int, default=30, help="a scenario not passed within this many days is a gap (default 30)"
    )
    group.addoption(
        "--evidence-key",
        default=None,
        help=f"Ed25519 private key signing the evidence manifest (or ${evidence.KEY_ENV})",
    )
    group.addoption("--evidence-archive", action="store_true", help="also write the evidence bundle as <run>.tar.gz")  # fmt: skip


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Set up the run directory, report paths, history file and signing key (before any privilege drop)."""
    from reports.environment import git_commit, suite_environment

    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"
    root = Path(config.rootpath)
    if hasattr(config, "workerinput"):  # an xdist worker: the controller owns the report, history and signing key
        shared = config.workerinput.get(WORKER_INPUT) or {}
        config.stash[run_key] = Run(shared.get("run_id", run_id), Path(shared.get("run_dir", root / "reports" / "out" / run_id)),
                                    "", Path(os.devnull), worker=True, no_drills=not shared)  # fmt: skip
        return
    explicit = bool(
        config.option.htmlpath or config.getoption("report_dir", None) or getattr(config.option, "xmlpath", None)
    )
    if not explicit and not _may_run_drills(config):  # e.g. `make test`: no report directory, history or evidence
        history = Path(config.getoption("history_file", None) or root / "reports" / "history.jsonl").resolve()
        config.stash[run_key] = Run(run_id, root / "reports" / "out" / run_id, "", history, no_drills=True)
        return
    if config.option.htmlpath:
        run_dir = Path(config.option.htmlpath).resolve().parent
    else:
        run_dir = Path(config.getoption("report_dir", None) or root / "reports" / "out" / run_id).resolve()
        config.option.htmlpath = str(run_dir / "report.html")
    config.option.self_contained_html = True
    config.option.css = [*(getattr(config.option, "css", None) or []), str(Path(__file__).with_name("pgdrill.css"))]
    if not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(run_dir / "junit.xml")
    run_dir.mkdir(parents=True, exist_ok=True)
    history_path = Path(config.getoption("history_file", None) or root / "reports" / "history.jsonl").resolve()
    run = Run(run_id, run_dir, datetime.now(UTC).isoformat(), history_path, explicit_output=explicit)
    try:
        run.signing_key = evidence.load_signing_key(config.getoption("evidence_key", None))
        if os.geteuid() == 0:  # the process may drop to an unprivileged user next: keep an open handle
            run.history = open_history(history_path)
    except BackupToolsError as e:
        raise pytest.UsageError(str(e)) from e
    run.git_commit = git_commit(root)
    run.environment = suite_environment(commit=run.git_commit)
    config.stash[run_key] = run
    config.pluginmanager.register(Records(config), "pgdrill-records")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Hand each xdist worker this run's id and directory, so its logs and artifacts land in the one bundle."""
    run = node.config.stash.get(run_key, None)
    if run is not None and not run.no_drills:
        node.workerinput[WORKER_INPUT] = {"run_id": run.run_id, "run_dir": str(run.run_dir)}


def _may_run_drills(config: pytest.Config) -> bool:
    """Whether the paths given to pytest may hold drills (anything in or above drills/, or not a plain path)."""
    drills = Path(config.rootpath, "drills").resolve()
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::", 1)[0]).resolve()
        if not path.exists() or path == drills or drills in path.parents or path in drills.parents:
            return True
    return False


def pytest_sessionstart(session: pytest.Session) -> None:
    """Add the PostgreSQL version and binaries, suite, host, tools, scale, seed to the Environment table."""
    from pytest_metadata.plugin import metadata_key

    from backup_tools.pg.bin import find_pg_bin
    from fixtures.clusters import pg_bin_key

    config, run = session.config, session.config.stash[run_key]
    if run.worker:
        return
    env = run.environment
    try:
        pg = config.stash[pg_bin_key] if pg_bin_key in config.stash else find_pg_bin(config.getoption("pg_bin", None))
        env["PostgreSQL"] = f"{pg.version} ({pg.source})"
        env["PostgreSQL binaries"] = str(pg.bindir)
    except Exception as e:  # the environment table must not break the run
        env["PostgreSQL"] = f"not found: {e}"
    env["Scale"] = str(config.getoption("scale", None))
    env["Seed"] = str(config.getoption("seed", None))
    if targets_key in config.stash:
        env["Targets"] = config.stash[targets_key].source
    env["Run"] = run.run_id
    env["History file"] = str(run.history_path)
    key = run.signing_key
    env["Evidence signing"] = (
        f"Ed25519 key {evidence.key_id(key.public_key())}" if key else "not signed (no --evidence-key)"
    )
    config.stash[metadata_key].update(env)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A run that collected no drill (unit tests) writes no drill report, results, JUnit file or evidence bundle."""
    run = session.config.stash.get(run_key, None)
    if (
        run is None
        or run.no_drills
        or run.worker
        or run.explicit_output
        or any(i.get_closest_marker("drill") for i in session.items)
    ):
        return
    from _pytest.junitxml import xml_key
    from pytest_html.basereport import BaseReport

    config = session.config
    for plugin in [p for p in config.pluginmanager.get_plugins() if isinstance(p, BaseReport)]:
        config.pluginmanager.unregister(plugin)
    xml = config.stash.get(xml_key, None)
    if xml is not None:
        del config.stash[xml_key]
        config.pluginmanager.unregister(xml)
    run.no_drills = True
    with contextlib.suppress(OSError):
        run.run_dir.rmdir()  # created empty at configure time


def _slug(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("/")[-1])[:120]


@pytest.fixture
def evidence_dir(request: pytest.FixtureRequest) -> Path:
    """A directory in this run's evidence bundle for the drill's own artifacts (kept as written, not redacted)."""
    path = request.config.stash[run_key].run_dir / "artifacts" / _slug(request.node.nodeid)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _figures(item: pytest.Item) -> dict[str, Any] | None:
    """The drill's figures, or for a drill that never got its Drill (setup error, skip) its marker's identity."""
    drill = item.stash.get(drill_key, None)
    if drill is not None:
        figures = drill.to_record()
        figures["target_max_lost_commits"] = drill.target.max_lost_commits
        if drill.failure is not None and len(drill.stopwatch.phases) == len(figures["phases"]):
            for out, phase in zip(figures["phases"], drill.stopwatch.phases, strict=True):
                out["start_seconds"] = round((phase.started - drill.failure.t_fail).total_seconds(), 4)
        return figures
    marker = item.get_closest_marker("drill")
    if marker is None or not marker.args:
        return None
    callspec = getattr(item, "callspec", None)
    target = item.config.stash[targets_key].for_scenario(marker.args[0]) if targets_key in item.config.stash else None
    return {"scenario": marker.args[0], "method": marker.kwargs.get("method") or (callspec.id if callspec else "default"),
            "target_rto_seconds": target.rto.total_seconds() if target else None,
            "target_rpo_seconds": target.rpo.total_seconds() if target else None,
            "target_max_lost_commits": target.max_lost_commits if target else None,
            "rto_seconds": None, "rpo_seconds": None, "lost_commits": None, "acknowledged_before_failure": None,
            "discarded_after_failure": None, "t_fail": None, "recovered_at": None,
            "phases": [], "checks": [], "violations": [], "notes": {},
            "family": FAULT_DETECTION if marker.kwargs.get("fault") else RECOVERY,
            "fault": {"injected": marker.kwargs["fault"], "detected": False, "detected_by": None, "message": None}
            if marker.kwargs.get("fault") else None, "data_source": SYNTHETIC, "source": None}  # fmt: skip


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """Record a drill's result (call, or a failed/skipped setup), keep its logs, add its details and JUnit properties."""
    report = yield
    report.sections = [(title, redact(text)) for title, text in report.sections]  # captured logs go into HTML and XML
    wanted = report.when == "call" or (report.when == "setup" and not report.passed)
    figures = _figures(item) if wanted else None
    if figures is None:
        return report
    from pytest_html import extras

    from reports.details import render_details

    run = item.config.stash[run_key]
    record = build_record(item=item, report=report, call=call, figures=figures)
    record["server_logs"], texts = copy_logs(log_sources(item, figures.get("notes") or {}),
                                             run.run_dir / "logs" / _slug(item.nodeid), run_dir=run.run_dir)  # fmt: skip
    lines = record["server_log_tail"] or (relevant_lines(texts) if record["verdict"] in ("fail", "error") else [])
    record["server_log_tail"] = lines
    report.pgdrill = record  # pytest-xdist carries it to the controller with the report
    report.extras = [*getattr(report, "extras", []), extras.html(render_details(record, log_lines=lines))]
    properties = [(key, record.get(key)) for key in JUNIT_PROPERTIES] + ([("why", why(record))] if why(record) else [])
    item.user_properties.extend(properties)  # junitxml writes the item's properties with the teardown report
    report.user_properties.extend(properties)
    return report


class Records:
    """Keeps each drill's record in the process that writes the report (not in an xdist worker) and prints its line."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """A drill's report arrived (from this process or an xdist worker): keep its record, print one line."""
        record = getattr(report, "pgdrill", None)
        run = self.config.stash.get(run_key, None)
        if record is None or run is None or run.worker:
            return
        run.records.append(record)
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:  # one line as each drill ends, so a long run shows more than dots
            terminal.write_line(f"pgdrill: {drill_line(record)}", **_colour(record))


def pytest_html_report_title(report: Any) -> None:
    """Title the report after the suite."""
    report.title = "pgdrill: backup restore and DR drill report"


def pytest_html_results_table_header(cells: list[str]) -> None:
    """Drill columns after the test name."""
    cells[2:2] = header_cells()


def pytest_html_results_table_row(report: pytest.TestReport, cells: list[str]) -> None:
    """Drill figures for drill rows, blanks for other tests."""
    cells[2:2] = row_cells(getattr(report, "pgdrill", None))


def pytest_html_results_summary(
    prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
) -> None:
    """Drill summary at the top; trends, staleness and the compliance section below the summary."""
    from reports.history import render_history

    run = session.config.stash.get(run_key, None)
    if run is None or not run.records:
        return
    prefix.append(render_summary(run.records, run_id=run.run_id))
    stale = timedelta(days=session.config.getoption("stale_days", 30))
    postfix.append(render_history(run.history_lines, last=session.config.getoption("history_runs", 20), stale_after=stale,
                                  scenarios=SCENARIOS, source=str(run.history_path), bad_lines=run.bad_history_lines))  # fmt: skip
    postfix.append(render_compliance(run.records, run.history_lines, stale_after=stale))


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> Iterator[None]:
    """Results and history before pytest-html and junitxml write their files; the evidence manifest after."""
    run = session.config.stash.get(run_key, None)
    if run is not None and (run.no_drills or run.worker):
        run = None
    if run is not None:
        _write_results(run)
    result = yield
    if run is not None:
        try:
            run.bundle = evidence.finish_bundle(run.run_dir, run_id=run.run_id, key=run.signing_key,
                                                archive=session.config.getoption("evidence_archive", False))  # fmt: skip
        except OSError as e:
            run.warnings.append(f"evidence bundle incomplete: {e}")
    return result


def _colour(record: dict[str, Any]) -> dict[str, bool]:
    return (
        {"red": True}
        if record["verdict"] in ("fail", "error")
        else {"green": True}
        if record["verdict"] == "pass"
        else {}
    )


def _write_results(run: Run) -> None:
    """Write drill-results.json, append this run's drills to the history and read the history back for trends."""
    finished = datetime.now(UTC).isoformat()
    for record in run.records:
        record.update(run_id=run.run_id, git_commit=run.git_commit, host=socket.gethostname())
    doc = {"schema_version": SCHEMA_VERSION, "run_id": run.run_id, "started_at": run.started_at, "finished_at": finished,
           "environment": run.environment, "drills": run.records}  # fmt: skip
    (run.run_dir / "drill-results.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    run.summary = evidence.write_summary(run.run_dir, run.records)
    if not run.records:
        return
    ran = [{**r, "finished_at": finished} for r in run.records]
    try:
        with run.history or open_history(run.history_path) as handle:
            append_history(handle, ran)
            handle.seek(0)
            history = parse_history(handle.read().decode(errors="replace"))
    except (BackupToolsError, OSError) as e:
        run.warnings.append(f"drill history {run.history_path} not updated: {e}")
        history = History([history_line(r) for r in ran])
    run.history_lines, run.bad_history_lines = history.records, history.bad_lines
    scenarios = {r["scenario"] for r in run.records}
    evidence.write_history_excerpt(run.run_dir, [r for r in history.records if r.get("scenario") in scenarios])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say where the report and evidence are, and why any drill failed, one line each."""
    run = config.stash.get(run_key, None)
    if run is None or run.no_drills or run.worker:
        return
    for record in run.records:
        if record["verdict"] in ("fail", "error"):
            terminalreporter.write_line(f"pgdrill: {record['verdict'].upper()} {record['scenario']}/{record['method']}: "
                                        f"{why(record)}", red=True)  # fmt: skip
    for warning in run.warnings:
        terminalreporter.write_line(f"pgdrill: WARNING {warning}", yellow=True)
    terminalreporter.write_line(f"pgdrill: report and results in {run.run_dir}")
    if run.bundle is not None:
        signed = f"signed by key {run.bundle.key_id}" if run.bundle.key_id else "unsigned"
        where = run.bundle.archive or run.run_dir
        terminalreporter.write_line(f"pgdrill: evidence bundle ({signed}): backup-tools evidence verify {where}")
        if run.summary:
            terminalreporter.write_line(f"pgdrill: this run {run.summary['statement']}")
