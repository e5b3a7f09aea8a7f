"""End to end: three pytest runs of fake drills produce reports, results, history trends, JUnit and evidence bundles."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backup_tools.cli.main import main as backup_tools
from backup_tools.monitor.history import read_history
from backup_tools.security.evidence import generate_key
from reports.history import series

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hunter2-not-for-reports"

CONFTEST = """
pytest_plugins = ["fixtures.drill", "reports.plugin"]


def pytest_addoption(parser):
    group = parser.getgroup("pgdrill")
    group.addoption("--targets", default=None)
    group.addoption("--scale", type=float, default=1.0)
    group.addoption("--seed", type=int, default=7)
"""

TARGETS = """
[targets]
default = { rto = "4h", rpo = "15min" }
accidental-deletion = { rto = "15min", rpo = "2min" }
corruption = { rto = "1min", rpo = "2min" }
"""

# Fake drills: figures come from the clock arithmetic, not from servers; PGDRILL_FAKE_RUN varies them per run.
DRILLS = f"""
import logging
import os
from datetime import UTC, datetime, timedelta

import pytest

from backup_tools.errors import IntegrityCheckFailed
from fixtures.drill import Check, FailurePoint
from fixtures.measure import RpoMeasurement

RUN = int(os.environ["PGDRILL_FAKE_RUN"])
log = logging.getLogger("pgdrill")


def fake(drill, tmp_path, *, rto, rpo):
    now = datetime.now(UTC)
    t_fail = now - timedelta(seconds=rto)
    drill.failure = FailurePoint(t_fail, xid="1234", lsn="0/3000060")
    drill.stopwatch.mark("fetch", t_fail + timedelta(seconds=rto * 0.1), t_fail + timedelta(seconds=rto * 0.3))
    drill.stopwatch.mark("WAL replay + start", t_fail + timedelta(seconds=rto * 0.3), t_fail + timedelta(seconds=rto * 0.8))
    drill.stopwatch.mark("verify", t_fail + timedelta(seconds=rto * 0.8), now)
    drill.rpo = RpoMeasurement(rpo, 41, 42, 0, (), 3, 0)
    drill.checks.append(Check("fingerprints", True, "5 tables equal"))
    drill.recovered_at = now
    drill.notes["backups"] = [{{"id": "full-1", "kind": "full", "size": 123456789, "sha256": "ab" * 32,
                               "created": (t_fail - timedelta(hours=3)).isoformat()}}]
    drill.notes["commands"] = [["pg_basebackup", "-d", "postgresql://app:{SECRET}@db/app", "-D", "/backup"],
                               "psql 'password={SECRET} host=db'"]
    log = tmp_path / "clusters" / "restored" / "server.log"
    log.parent.mkdir(parents=True)
    log.write_text("LOG:  starting point-in-time recovery\\n"
                   "ERROR:  connection for user app password={SECRET} refused\\n"
                   "LOG:  database system is ready to accept connections\\n")
    drill.finish(None)


@pytest.mark.drill("accidental-deletion", method="pitr")
@pytest.mark.parametrize("case", ["drop-table", "delete-rows"])
def test_deletion(drill, tmp_path, case, evidence_dir):
    (evidence_dir / "backup_manifest").write_text("{{}}\\n")
    log.warning("### Connecting with password={SECRET}")
    if RUN == 3:  # the third run restores the team's backup: only it evidences controls
        drill.set_source("team-backup", kind="pgdrill-repo", location="s3://team-backups/prod?password={SECRET}",
                         backup="full-1", created_at=datetime(2026, 3, 1, tzinfo=UTC))
    fake(drill, tmp_path, rto=60 + 10 * RUN, rpo=0.5 * RUN)


@pytest.mark.drill("complete-loss", method="logical", fault="backup object corrupted")
def test_corrupted_object_is_caught(drill):
    drill.mark_failure()
    with drill.expect_detection():
        raise IntegrityCheckFailed("backup-tools restore failed (exit 1): fetching base.tar\\n"
                             "error: sha256 mismatch in base.tar: the stored object is corrupt")


@pytest.mark.drill("corruption", method="amcheck")
def test_corruption_misses_its_rto(drill, tmp_path):
    fake(drill, tmp_path, rto=80 + 10 * RUN, rpo=1.0)


@pytest.fixture
def broken_cluster():
    raise RuntimeError("initdb failed: could not create directory")


@pytest.mark.drill("complete-loss", method="full")
def test_setup_error(broken_cluster, drill):
    pass


@pytest.mark.drill("regional-outage", method="dr-copy")
def test_skipped(drill):
    pytest.skip("no DR region configured")


def test_not_a_drill():
    assert True
"""


def run_fake_suite(project: Path, *, run: int, extra: list[str] = ()) -> tuple[Path, subprocess.CompletedProcess]:
    """Run the fake drills once as its own pytest process; return the run directory."""
    report_dir = project / "out" / f"run{run}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PGDRILL_FAKE_RUN": str(run)}
    env.pop("PGDRILL_EVIDENCE_KEY", None)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--report-dir", str(report_dir),
            "--history-file", str(project / "history.jsonl"), "--targets", str(project / "targets.toml"),
            *extra, "test_fake_drills.py"]  # fmt: skip
    done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    return report_dir, done


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three consecutive runs against one history file; the third signs its bundle and writes an archive."""
    project = tmp_path_factory.mktemp("fake-project")
    (project / "conftest.py").write_text(CONFTEST)
    (project / "pytest.ini").write_text("[pytest]\nmarkers =\n    drill: a drill\njunit_family = xunit1\n")
    (project / "targets.toml").write_text(TARGETS)
    (project / "test_fake_drills.py").write_text(DRILLS)
    key = project / "evidence.pem"
    generate_key(key)
    runs = []
    for n in (1, 2, 3):
        extra = ["--evidence-key", str(key), "--evidence-archive"] if n == 3 else []
        runs.append(run_fake_suite(project, run=n, extra=extra))
    return {"project": project, "runs": runs, "key": key, "public": Path(f"{key}.pub")}


@pytest.fixture(scope="module")
def last_run(three_runs: dict) -> Path:
    run_dir, done = three_runs["runs"][-1]
    assert done.returncode == 1, done.stdout + done.stderr  # the corruption drill fails on purpose
    return run_dir


def test_each_run_writes_the_report_results_junit_and_says_why_a_drill_failed(three_runs):
    for run_dir, done in three_runs["runs"]:
        assert {"report.html", "drill-results.json", "junit.xml", "manifest.json"} <= {
            p.name for p in run_dir.iterdir()
        }
        assert "pgdrill: FAIL corruption/amcheck: measured RTO" in done.stdout
        assert "pgdrill: ERROR complete-loss/full" in done.stdout


def test_each_drill_prints_one_line_as_it_ends(three_runs):
    out = three_runs["runs"][0][1].stdout
    assert "pgdrill: PASS accidental-deletion/pitr [drop-table] on synthetic data: RTO 1 min 10 s / 15 min 00 s" in out
    assert (
        "pgdrill: CAUGHT fault-detection complete-loss/logical: backup object corrupted; caught by backup-tools restore (exit 1)"
        in out
    )
    assert "pgdrill: SKIPPED regional-outage/dr-copy: no DR region configured" in out


def test_a_run_without_drills_writes_no_report_and_no_evidence_line(three_runs):
    project = three_runs["project"]
    (project / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PGDRILL_FAKE_RUN": "1"}
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--history-file",
            str(project / "plain-history.jsonl"), "test_plain.py"]  # fmt: skip
    done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pgdrill:" not in done.stdout and "Generated html report" not in done.stdout
    assert not list((project / "reports" / "out").glob("*/report.html")) if (project / "reports").exists() else True
    assert not (project / "plain-history.jsonl").exists()


def test_three_runs_give_three_points_per_scenario(three_runs, last_run):
    history = read_history(three_runs["project"] / "history.jsonl")
    assert not history.bad_lines
    assert len({r["run_id"] for r in history.records}) == 3
    points = series(history.records, last=20)
    assert {k: len(v) for k, v in points.items()} == {
        ("accidental-deletion", "pitr"): 3,
        ("corruption", "amcheck"): 3,
        ("complete-loss", "full"): 3,
    }
    assert [round(p["rto_seconds"]) for p in points[("accidental-deletion", "pitr")]] == [70, 80, 90]
    html = (last_run / "report.html").read_text()
    for scenario, method, rto in (("accidental-deletion", "pitr", "met"), ("corruption", "amcheck", "missed")):
        figure = re.search(rf'<figure class="pgdrill-trend" data-scenario="{scenario}" data-method="{method}" '
                           r'data-points="3">(.*?)</figure>', html, re.S)  # fmt: skip
        assert figure, f"no trend chart with 3 points for {scenario}/{method}"
        for key, outcome in (("rto_seconds", rto), ("rpo_seconds", "met")):  # red X where a figure missed its target
            group = re.search(rf'<g id="{key}-{outcome}">(.*?)</g>\s*</g>', figure.group(1), re.S)
            assert group and group.group(1).count("<use ") == 3, f"{scenario} {key}: not 3 points"


def test_failing_drill_row_says_scenario_figure_and_target_in_one_line(last_run):
    html = (last_run / "report.html").read_text()
    summary = html.split('id="pgdrill-summary"')[1].split("</table>")[0]
    rows = re.findall(r'<tr class="pgdrill-row-(\w+)">(.*?)</tr>', summary, re.S)
    by_scenario = {re.search(r"<b>(.*?)</b>", row).group(1): (verdict, row) for verdict, row in rows}
    assert set(by_scenario) == {"accidental-deletion", "corruption", "complete-loss", "regional-outage"}
    verdict, row = by_scenario["corruption"]
    assert verdict == "fail"
    why = re.search(r'<td class="pgdrill-why">(.*?)</td>', row).group(1)
    assert why == "measured RTO 1 min 50 s exceeds target 1 min 00 s"
    assert (
        by_scenario["accidental-deletion"][0] == "pass"
        and "drop-table, delete-rows" in by_scenario["accidental-deletion"][1]
    )
    assert by_scenario["complete-loss"][0] == "error" and "initdb failed" in by_scenario["complete-loss"][1]
    assert (
        by_scenario["regional-outage"][0] == "skip" and "no DR region configured" in by_scenario["regional-outage"][1]
    )
    assert html.index('id="pgdrill-summary"') < html.index('id="results-table"')


def test_results_json_validates_against_the_documented_schema(three_runs):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is needed to validate drill-results.json")
    schema = json.loads((ROOT / "docs" / "drill-results.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for run_dir, _ in three_runs["runs"]:
        doc = json.loads((run_dir / "drill-results.json").read_text())
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, errors
        assert len(doc["drills"]) == 6
    broken = json.loads((three_runs["runs"][0][0] / "drill-results.json").read_text())
    del broken["drills"][0]["verdict"]
    broken["drills"][1]["rto_seconds"] = "fast"
    assert len(list(validator.iter_errors(broken))) == 2


def test_results_record_backups_commands_and_logs_with_secrets_redacted(last_run):
    doc = json.loads((last_run / "drill-results.json").read_text())
    deletion = next(d for d in doc["drills"] if d["case"] == "drop-table")
    assert deletion["backups"][0] | {"age_seconds": 0} == {
        "id": "full-1", "kind": "full", "size_bytes": 123456789, "sha256": "ab" * 32, "age_seconds": 0,
        "created_at": deletion["backups"][0]["created_at"]}  # fmt: skip
    assert deletion["backups"][0]["age_seconds"] == pytest.approx(3 * 3600, abs=1)
    assert deletion["commands"][0] == "pg_basebackup -d 'postgresql://app:***@db/app' -D /backup"
    assert deletion["server_logs"] == ["logs/test_fake_drills.py_test_deletion_drop-table_/restored.log"]
    assert [p["name"] for p in deletion["phases"]] == ["detect", "fetch", "WAL replay + start", "verify"]
    assert deletion["phases"][2]["start_seconds"] == pytest.approx(0.3 * 90, abs=0.5)
    corruption = next(d for d in doc["drills"] if d["scenario"] == "corruption")
    assert any("ERROR:  connection for user app password=***" in line for line in corruption["server_log_tail"])
    assert "### Connecting with password=***" in (last_run / "report.html").read_text()  # captured log, redacted
    for path in last_run.rglob("*"):
        if path.is_file() and path.suffix != ".gz":
            assert SECRET not in path.read_text(errors="replace"), f"secret leaked into {path}"


def test_junit_has_the_figures_as_properties(last_run):
    cases = {c.get("name"): c for c in ET.parse(last_run / "junit.xml").getroot().iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_corruption_misses_its_rto"].iter("property")}
    assert props["scenario"] == "corruption" and props["verdict"] == "fail"
    assert float(props["rto_seconds"]) == pytest.approx(110, abs=1) and props["target_rto_seconds"] == "60.0"
    assert props["why"] == "measured RTO 1 min 50 s exceeds target 1 min 00 s"
    assert not list(cases["test_not_a_drill"].iter("property"))


def test_signed_bundle_verifies_and_one_changed_byte_is_named(three_runs, last_run, capsys):
    public = str(three_runs["public"])
    assert backup_tools(["evidence", "verify", str(last_run), "--public-key", public]) == 0
    archive = last_run.with_name(last_run.name + ".tar.gz")
    assert backup_tools(["evidence", "verify", str(archive), "--public-key", public]) == 0
    manifest = json.loads((last_run / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert {"report.html", "drill-results.json", "junit.xml", "history-excerpt.jsonl"} <= listed
    assert any(p.startswith("logs/") and p.endswith("/restored.log") for p in listed)
    assert "artifacts/test_fake_drills.py_test_deletion_drop-table_/backup_manifest" in listed
    capsys.readouterr()
    log = next(p for p in listed if p.startswith("logs/"))
    data = bytearray((last_run / log).read_bytes())
    data[len(data) // 2] ^= 0x20
    (last_run / log).write_bytes(bytes(data))
    assert backup_tools(["evidence", "verify", str(last_run), "--public-key", public]) == 1
    assert f"TAMPERED {log}" in capsys.readouterr().out
    other = three_runs["project"] / "other.pub"
    other.write_text(base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode())
    assert backup_tools(["evidence", "verify", str(archive), "--public-key", str(other)]) == 1
    assert backup_tools(["evidence", "verify", str(three_runs["runs"][0][0])]) == 0  # unsigned run 1 still intact


def test_compliance_section_lists_runs_last_pass_and_gaps(last_run):
    html = (last_run / "report.html").read_text()
    section = html[html.index('id="pgdrill-compliance"') :]
    rows = {
        control: status
        for status, control in re.findall(r'<tr class="pgdrill-control-(\w+)"><td><b>(.*?)</b>', section)
    }
    assert rows["SOC 2 A1.3"] == "ok"  # run 3 restored the team's backup
    assert rows["SOC 2 CC8.1"] == "gap"  # no predeploy-rollback drill ran
    assert rows["ISO 27001 A.8.14"] == "gap"  # regional-outage was skipped
    assert "skipped: regional-outage/dr-copy" in section.split("ISO 27001 A.8.14")[1].split("</tr>")[0]


def test_a_synthetic_run_evidences_no_control_and_a_team_backup_run_does(three_runs, last_run):
    first = three_runs["runs"][0][0]
    html = (first / "report.html").read_text()
    top = html[html.index('id="pgdrill-summary-section"') : html.index('id="pgdrill-summary"')]
    assert "on synthetic data" in top and "evidences no compliance control" in top
    section = html[html.index('id="pgdrill-compliance"') :]
    assert 'class="pgdrill-control-ok"' not in section and "EXERCISED ON SYNTHETIC DATA" in section
    doc = json.loads((first / "drill-results.json").read_text())
    assert {d["data_source"] for d in doc["drills"]} == {"synthetic"} and not any(d["evidences"] for d in doc["drills"])
    team = json.loads((last_run / "drill-results.json").read_text())
    deletion = [d for d in team["drills"] if d["scenario"] == "accidental-deletion"]
    assert {d["data_source"] for d in deletion} == {"team-backup"}
    assert deletion[0]["source"] == {
        "kind": "pgdrill-repo",
        "location": "s3://team-backups/prod?password=***",
        "backup": "full-1",
        "created_at": "2026-03-01T00:00:00+00:00",
    }
    assert "SOC 2 A1.3" in deletion[0]["evidences"]
    synthetic = json.loads((first / "evidence-summary.json").read_text())
    assert (
        synthetic["controls_evidenced"] == [] and "SOC 2 A1.3" in synthetic["controls_exercised_on_synthetic_data_only"]
    )
    assert synthetic["statement"].startswith("evidences no compliance control")
    assert "pgdrill: this run evidences no compliance control" in three_runs["runs"][0][1].stdout
    summary = json.loads((last_run / "evidence-summary.json").read_text())
    assert "SOC 2 A1.3" in summary["controls_evidenced"] and summary["drills"]["fault-detection"] == {
        "synthetic/pass": 1
    }
    assert summary["team_sources"][0]["location"] == "s3://team-backups/prod?password=***"
    assert "evidence-summary.json" in {f["path"] for f in json.loads((last_run / "manifest.json").read_text())["files"]}
    html = (last_run / "report.html").read_text()
    top = html[html.index('id="pgdrill-summary-section"') : html.index('id="pgdrill-summary"')]
    assert "1 on the team&#x27;s backup." in top and "evidences no compliance control" not in top


def test_fault_detection_drills_are_apart_and_no_passing_row_has_a_red_figure(last_run):
    doc = json.loads((last_run / "drill-results.json").read_text())
    fault = next(d for d in doc["drills"] if d["family"] == "fault-detection")
    assert fault["verdict"] == "pass" and fault["controls"] == [] and fault["evidences"] == []
    assert fault["fault"] == {"injected": "backup object corrupted", "detected": True,
                              "detected_by": "backup-tools restore (exit 1)", "message": "backup-tools restore: error: sha256 mismatch in base.tar: the stored "
                                         "object is corrupt"}  # fmt: skip
    assert all(d["family"] == "recovery" for d in doc["drills"] if d is not fault)
    html = (last_run / "report.html").read_text()
    summary = html.split('id="pgdrill-summary"')[1].split("</table>")[0]
    faults = html.split('id="pgdrill-faults"')[1].split("</table>")[0]
    assert "backup object corrupted" not in summary and "backup object corrupted" in faults and "CAUGHT" in faults
    for verdict, row in re.findall(r'<tr class="pgdrill-row-(\w+)">(.*?)</tr>', summary, re.S):
        assert verdict != "pass" or "pgdrill-miss" not in row, row
    assert "1 of 1 fault-detection drill caught the fault" in html
    history = read_history(last_run.parent.parent / "history.jsonl").records
    assert {r["family"] for r in history} == {"recovery", "fault-detection"}


def test_report_renders_in_headless_chromium_with_the_summary_visible(last_run, tmp_path):
    import numpy as np
    from PIL import Image

    from reports.screenshot import dump_dom, find_chromium, screenshot

    if find_chromium() is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'): the report's look is not browser-checked")
    dom = dump_dom(last_run / "report.html")
    assert 'id="pgdrill-summary"' in dom and "measured RTO 1 min 50 s exceeds target 1 min 00 s" in dom
    assert dom.count('class="results-table-row') >= 6  # pytest-html's JavaScript built the results table
    png = screenshot(last_run / "report.html", tmp_path / "report.png", width=1280, height=900)
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 900)
    pixels = np.asarray(image, dtype=int)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "the screenshot is blank"

    def count(colour: tuple[int, int, int]) -> int:
        return int(np.all(np.abs(pixels - colour) <= 12, axis=-1).sum())

    assert count((0x1A, 0x7F, 0x37)) > 300, "no PASS badge drawn on the first screen"
    assert count((0xCF, 0x22, 0x2E)) > 300, "no FAIL badge drawn on the first screen"
