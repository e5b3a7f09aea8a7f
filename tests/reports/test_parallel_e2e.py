"""End to end: the fake drills under pytest-xdist (-n 2) and split into --shard runs merged by `python -m reports merge`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from backup_tools.cli.main import main as backup_tools
from backup_tools.monitor.history import read_history
from backup_tools.security.evidence import generate_key
from tests.reports.test_report_e2e import CONFTEST, DRILLS, ROOT, SECRET, TARGETS, run_fake_suite

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


def merge_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PGDRILL_EVIDENCE_KEY", None)
    return subprocess.run([sys.executable, "-m", "reports", "merge", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_two_shards_merge_into_one_report_junit_history_append_and_signed_bundle(project: Path):
    key = str(project / "evidence.pem")
    shards = []
    for n in (1, 2):
        run_dir, done = run_fake_suite(project, run=10 + n, extra=["--shard", f"{n}/2", "--evidence-key", key,
                                                                   "--history-file", str(project / f"shard{n}.jsonl")])  # fmt: skip
        assert "deselected" in done.stdout, done.stdout + done.stderr
        shards.append(run_dir)
    tests = [{r["test"] for r in results(s)["drills"]} for s in shards]
    assert tests[0] and tests[1] and not tests[0] & tests[1]
    assert len(tests[0] | tests[1]) == DRILL_TESTS
    history = project / "merged-history.jsonl"
    merged = project / "out" / "merged"
    done = merge_cli(str(project / "out" / "run11"), str(project / "out" / "run12"), "--out", str(merged),
                     "--history-file", str(history), "--evidence-key", key, cwd=project)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # the failing corruption drill fails the merge too
    assert "pgdrill: FAIL corruption/amcheck: measured RTO" in done.stdout
    assert f"backup-tools evidence verify {merged}" in done.stdout
    doc = results(merged)
    assert {r["test"] for r in doc["drills"]} == tests[0] | tests[1]
    assert {r["run_id"] for r in doc["drills"]} == {doc["run_id"]}
    assert {r["shard_run_id"] for r in doc["drills"]} == {results(s)["run_id"] for s in shards}
    assert [results(s)["environment"]["Shard"] for s in shards] == ["1/2", "2/2"]
    cases = list(ET.parse(merged / "junit.xml").getroot().iter("testcase"))
    assert len(cases) == DRILL_TESTS + 1  # test_not_a_drill too
    suite = ET.parse(merged / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("7", "1", "1")
    lines = read_history(history).records
    assert len(lines) == DRILL_TESTS and {r["run_id"] for r in lines} == {doc["run_id"]}
    html = (merged / "report.html").read_text()
    assert "pgdrill-summary" in html and "test_corruption_misses_its_rto" in html and SECRET not in html
    assert backup_tools(["evidence", "verify", str(merged), "--public-key", f"{key}.pub"]) == 0
    listed = {f["path"] for f in json.loads((merged / "manifest.json").read_text())["files"]}
    assert any(p.startswith("logs/") for p in listed) and any(p.startswith("artifacts/") for p in listed)
    assert {f"shards/{results(s)['run_id']}/manifest.sig" for s in shards} <= listed

    shutil.copytree(shards[0], project / "copied" / "run11")
    again = merge_cli(str(shards[0]), str(shards[1]), str(project / "copied"), "--out", str(project / "twice"), "--history-file",
                      str(project / "twice.jsonl"), cwd=project)  # fmt: skip
    assert again.returncode == 2 and "ran in two shards" in again.stderr, again.stderr
    log = next(p for p in (shards[1] / "logs").rglob("*.log"))
    log.write_text(log.read_text() + "changed after the run\n")
    tampered = merge_cli(str(shards[0]), str(shards[1]), "--out", str(project / "tampered"), "--history-file",
                         str(project / "tampered.jsonl"), cwd=project)  # fmt: skip
    assert tampered.returncode == 1 and "does not match its evidence manifest" in tampered.stderr, tampered.stderr
    assert not (project / "tampered.jsonl").exists()
    alone = merge_cli(str(shards[0]), "--out", str(project / "alone"), "--history-file", str(project / "a.jsonl"),
                      cwd=project)  # fmt: skip
    assert alone.returncode == 1 and "shard(s) 2/2 missing" in alone.stderr, alone.stderr


def test_a_bad_shard_value_is_a_usage_error(project: Path):
    _, done = run_fake_suite(project, run=20, extra=["--shard", "3/2"])
    assert done.returncode == 4 and "expected I/N with 1 <= I <= N" in done.stderr, done.stdout + done.stderr


KEEP_CONFTEST = """
pytest_plugins = ["fixtures.clusters", "fixtures.gate", "fixtures.parallel"]


def pytest_addoption(parser):
    parser.addoption("--pg-bin", default=None)
    parser.addoption("--keep-failed", action="store_true")
    for name in ("--dsn", "--source-repo", "--source-dumps", "--source-globals", "--source-pgbackrest"):
        parser.addoption(name, default=None)
"""
KEEP_TESTS = """
import pytest


@pytest.mark.parametrize("n", [1, 2])
def test_fails_with_a_cluster(make_cluster, n):
    make_cluster(f"c{n}")
    assert False, "fails on purpose"
"""


def test_auto_workers_hand_kept_directories_to_the_controllers_summary(tmp_path: Path):
    (tmp_path / "conftest.py").write_text(KEEP_CONFTEST)
    (tmp_path / "test_keep.py").write_text(KEEP_TESTS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "auto", "--keep-failed",
                           "test_keep.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    kept = [line for line in done.stdout.splitlines() if "kept failed drill's data directories" in line]
    assert len(kept) == 2, done.stdout
    assert all(Path(line.rsplit(" in ", 1)[1], "clusters").is_dir() for line in kept)
