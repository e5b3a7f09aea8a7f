"""The drill suite as a user runs it: a missed target goes red with scenario, figure and target; bad input stops early."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRILL = "drills/test_accidental_deletion.py::test_restore_to_just_before_the_harmful_commit[full-drop-table]"


def run_pytest(*args: str, report_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    options = ["--report-dir", str(report_dir), "--history-file", str(report_dir / "history.jsonl")]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *options, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.integration
def test_unachievable_rto_target_fails_the_drill_with_a_readable_reason(tmp_path):
    targets = tmp_path / "targets.toml"
    targets.write_text('[targets.accidental-deletion]\nrto = "100ms"\nrpo = "2min"\n')
    done = run_pytest(DRILL, "--scale", "0.05", "--targets", str(targets), report_dir=tmp_path / "out")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "accidental-deletion/full: measured RTO" in done.stdout
    assert "exceeds target 100 ms" in done.stdout
    record = json.loads((tmp_path / "out" / "drill-results.json").read_text())["drills"][0]
    assert record["outcome"] == "failed"
    assert record["target_rto_seconds"] == 0.1
    assert record["rto_seconds"] > 0.1
    assert "exceeds target 100 ms" in record["reason"]
    assert "FAIL" in (tmp_path / "out" / "report.html").read_text()


def test_unparseable_target_stops_the_run_before_any_cluster_starts(tmp_path):
    targets = tmp_path / "targets.toml"
    targets.write_text('[targets.accidental-deletion]\nrto = "4 hourz"\n')
    started = time.monotonic()
    done = run_pytest(DRILL, "--targets", str(targets), report_dir=tmp_path / "out", timeout=120)
    assert done.returncode == 4  # pytest's usage error
    assert "invalid duration '4 hourz'" in done.stderr
    assert "Starting cluster" not in done.stdout + done.stderr
    assert time.monotonic() - started < 60


def test_pg_bin_without_initdb_stops_the_run_with_what_was_searched(tmp_path):
    done = run_pytest(DRILL, "--pg-bin", str(tmp_path), report_dir=tmp_path / "out", timeout=120)
    assert done.returncode == 4
    assert f"{tmp_path} from --pg-bin (no initdb, pg_ctl, postgres)" in done.stderr
