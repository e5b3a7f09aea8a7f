"""Unit tests of the drill helpers that need no server: sizes, RTO projection, restore options, zero-loss targets."""

from datetime import UTC, datetime, timedelta

import pytest

from backup_tools.restore.pitr import RecoveryTarget
from backup_tools.units import format_bytes
from fixtures.drill import Drill, first_error_line, parse_size, project_rto
from fixtures.measure import Phase, RpoMeasurement
from fixtures.methods import FullBackup, SyncStreaming, target_args
from fixtures.targets import Target

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [("2048", 2048), ("10MB", 10 << 20), ("1.5 TiB", int(1.5 * (1 << 40))),
                                                ("500gb", 500 << 30)])  # fmt: skip
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_parse_size_rejects_nonsense():
    with pytest.raises(pytest.UsageError, match="production-size"):
        parse_size("lots")


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 << 30, "3.0 GiB"),
                                         (2.5 * (1 << 40), "2.5 TiB"), (5000 << 40, "5000.0 TiB")])  # fmt: skip
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_projection_scales_only_size_bound_phases():
    phases = [Phase("copy", T0, T0 + timedelta(seconds=2)), Phase("replay", T0, T0 + timedelta(seconds=3))]
    out = project_rto(phases, {"copy": 100 << 20}, 1 << 30)  # 100 MiB in 2 s -> 1 GiB in 20.48 s; replay stays 3 s
    assert out["projected_rto_seconds"] == pytest.approx(23.5, abs=0.1)
    assert out["throughput_bytes_per_second"] == {"copy": (100 << 20) // 2}
    assert out["production_size"] == "1.0 GiB"


@pytest.mark.parametrize(("target", "args"), [
    (None, []),
    (RecoveryTarget(xid="77", inclusive=False), ["--target-xid", "77", "--exclusive"]),
    (RecoveryTarget(name="before-migration"), ["--target-name", "before-migration"]),
    (RecoveryTarget(immediate=True), ["--target-immediate"]),
])  # fmt: skip
def test_target_args(target, args):
    assert target_args(target) == args


def _drill(rpo: str, lost: int) -> Drill:
    zero = float(rpo) == 0  # as parse_targets makes it: RPO 0 promises zero lost commits
    target = Target("x", timedelta(minutes=5), timedelta(seconds=float(rpo)), 0 if zero else None)
    d = Drill("x", "m", target)
    d.rto_seconds = 1.0
    d.rpo = RpoMeasurement(0.3, 5, 10, lost, tuple(range(lost)), 0, 0)
    return d


def test_rpo_target_zero_means_no_acknowledged_commit_lost():
    assert _drill("0", 0).violations() == []
    assert _drill("0", 2).violations() == ["2 acknowledged commits lost (target: at most 0)"]


def test_rpo_target_in_seconds_is_compared_as_time():
    assert _drill("0.1", 0).violations()[0].startswith("measured RPO")


def test_method_opens_its_repository_once_and_restores_a_chosen_backup(tmp_path):
    method = FullBackup(pg=None, make_cluster=None, repo_dir=tmp_path / "repo")  # type: ignore[arg-type]
    assert method.repo is method.repo and method.repo.url == f"file://{tmp_path / 'repo'}"
    assert method.restore_args() == []
    method.chosen = "b1"
    assert method.restore_args() == ["--backup", "b1"]


def test_a_method_writes_into_its_drill_record_and_the_drill_never_calls_it(tmp_path):
    drill = Drill("complete-loss", None, Target("complete-loss", timedelta(hours=1), timedelta(minutes=5)),
                  test_id="full@s3-x")  # fmt: skip
    assert drill.method == "full@s3-x" and drill.notes == {}
    method = FullBackup(pg=None, make_cluster=None, repo_dir=tmp_path / "r", recorder=drill.recorder,  # type: ignore[arg-type]
                        label="full@s3")  # fmt: skip
    assert drill.method == "full@s3" and drill.method_backups == [] and drill.target.max_lost_commits is None
    with method.phase("fetch", size_bytes=10):
        pass
    assert [p.name for p in drill.stopwatch.phases] == ["fetch"] and drill.phase_bytes == {"fetch": 10}
    assert method.backup_size() == 0 and drill.method_backups == []  # nothing taken: the record lists no backup
    method.recorder.command(["backup-tools", "list"])
    assert drill.method_commands == [["backup-tools", "list"]]
    SyncStreaming(pg=None, make_cluster=None, repo_dir=tmp_path / "s", recorder=drill.recorder)  # type: ignore[arg-type]
    assert drill.target.max_lost_commits == 0 and drill.method == "sync-streaming"
    labelled = Drill("x", "gate", drill.target, method_name="logical", variant="@container")
    assert labelled.method == "gate@container"  # the marker's method= names the record; containers add a suffix


def test_the_drill_record_knows_no_method():
    import ast
    from pathlib import Path

    source = Path(__file__).resolve().parents[2] / "fixtures" / "drill.py"
    names = {n.id for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.Name)}
    imported = {n.module for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.ImportFrom)}
    assert "fixtures.methods" not in imported and not {"Method", "METHODS"} & names


def test_the_reason_is_the_first_real_error_line_after_the_failing_command():
    auth = ("backup-tools restore failed (exit 1): restoring 20260301T0000Z-logical\nLOG: connecting\n"
            "pg_restore: error: connection to server failed: fe_sendauth: no password supplied")  # fmt: skip
    assert first_error_line(auth) == (
        "backup-tools restore: pg_restore: error: connection to server failed: fe_sendauth: no password supplied"
    )
    role = 'backup-tools restore failed (exit 1): x\npg_restore: error: ERROR:  role "app_owner" does not exist'
    assert first_error_line(role).endswith('ERROR: role "app_owner" does not exist')
    assert first_error_line("cluster did not start\nLOG: a\nFATAL: could not open file").endswith(
        "FATAL: could not open file"
    )
    own = "backup-tools restore failed (exit 3): backup-tools restore: error: wrong key"
    assert first_error_line(own) == own
    assert first_error_line("Failed: corruption/full: measured RTO 2 s exceeds target 1 s") == (
        "corruption/full: measured RTO 2 s exceeds target 1 s"
    )


def test_a_zombie_counts_as_gone_so_a_late_reaper_does_not_add_to_rto():
    import os
    import subprocess
    import time

    from fixtures.cluster import gone

    live = subprocess.Popen(["sleep", "30"])
    zombie = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while not gone(zombie.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(zombie.pid, 0)  # still in the process table (not reaped): signal 0 alone would call it alive
        assert gone(zombie.pid) and not gone(live.pid)
    finally:
        live.kill()
        live.wait()
        zombie.wait()
    assert gone(zombie.pid) and gone(live.pid)


def test_what_caught_a_fault_names_the_command_and_exit_code_or_the_data_check():
    from backup_tools.errors import ToolFailed
    from fixtures.drill import caught_by

    assert caught_by(ToolFailed("backup-tools restore failed (exit 3): wrong key")) == "backup-tools restore (exit 3)"
    failed = pytest.fail.Exception("x/full: data check fingerprints failed: chat_messages: 0 rows")
    assert caught_by(failed) == "data check: fingerprints"
    assert caught_by(RuntimeError("boom")) == "RuntimeError"
