"""End to end: the fake drills under pytest-xdist (-n 2) and split into --shard runs merged by `python -m reports merge`."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from backup_tools.cli.main import main as backup_tools
from backup_tools.monitor.history import read_history
from backup_tools.security.evidence import generate_key
from tests.reports.test_report_e2e import CONFTEST, DRILLS, SECRET, TARGETS, run_fake_suite

DRILL_TESTS = 6  # test_deletion x2, corrupted object, corruption, setup error, skipped (test_not_a_drill is no drill)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake suite with the shard plugin too, and a signing key."""
    path = tmp_path_factory.mktemp("fake-parallel")
    (path / "conftest.py").write_text(CONFTEST.replace('"reports.plugin"]', '"reports.plugin", "reports.shards"]'))
    (path / "pytest.ini").write_text("[pytest]\nmarkers =\n    drill: a drill\njunit_family = xunit1\n")
    (path / "targets.toml").write_text(TARGETS)
    (path / "test_fake_drills.py").write_text(DRILLS)
    generate_key(path / "evidence.pem")
    return path


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "drill-results.json").read_text())


def test_two_workers_write_one_report_results_junit_bundle_and_history(project: Path):
    key = str(project / "evidence.pem")
    run_dir, done = run_fake_suite(project, run=1, extra=["-n", "2", "--evidence-key", key])
    assert done.returncode == 1, done.stdout + done.stderr  # the corruption drill fails on purpose
    assert "bringing up nodes" in done.stdout
    assert done.stdout.count("pgdrill: FAIL corruption/amcheck") == 2  # its line as it ends, and the summary's
    doc = results(run_dir)
    assert len(doc["drills"]) == DRILL_TESTS and {r["run_id"] for r in doc["drills"]} == {doc["run_id"]}
    assert sorted(p.name for p in project.joinpath("out").iterdir()) == ["run1"], "a worker wrote its own run dir"
    cases = list(ET.parse(run_dir / "junit.xml").getroot().iter("testcase"))
    assert len(cases) == DRILL_TESTS + 1
    assert any(p.get("name") == "verdict" for c in cases for p in c.iter("property"))
    history = read_history(project / "history.jsonl")
    assert len(history.records) == DRILL_TESTS and {r["run_id"] for r in history.records} == {doc["run_id"]}
    assert backup_tools(["evidence", "verify", str(run_dir), "--public-key", f"{key}.pub"]) == 0
    listed = {f["path"] for f in json.loads((run_dir / "manifest.json").read_text())["files"]}
    assert any(p.startswith("logs/") for p in listed), "the workers' server logs are not in the bundle"
    assert any(p.startswith("artifacts/") for p in listed), "the workers' artifacts are not in the bundle"
    assert SECRET not in (run_dir / "report.html").read_text()
