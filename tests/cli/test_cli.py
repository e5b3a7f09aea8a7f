"""The backup-tools CLI end to end: the issue's round trip (full, incremental, wal-push, restore to a time) and errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
import pytest

from backup_tools.pg.checks import Fingerprint, fingerprint
from backup_tools.pg.ports import free_port
from tests.support.pgversions import needs_incremental

pytestmark = pytest.mark.integration


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run backup-tools as a separate process, the way operators and archive_command do."""
    done = subprocess.run([sys.executable, "-m", "backup_tools", *args], capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"backup-tools {' '.join(args)} exited {done.returncode}: {done.stderr}\n{done.stdout}")
    return done


def write_rows(cluster, first: int, last: int) -> None:
    """Commit rows first..last, one transaction each, with their commit-time stamps."""
    with cluster.connect() as conn:
        for i in range(first, last + 1):
            conn.execute("INSERT INTO ledger (id, note) VALUES (%s, %s)", [i, f"row {i}"])


@pytest.fixture
def primary(make_cluster, tmp_path):
    repo_url = f"file://{tmp_path / 'repo'}"
    (tmp_path / "repo").mkdir()
    cluster = make_cluster("primary")
    cluster.init(has_archiving=True, archive_url=repo_url)  # archive_command = backup-tools wal-push %p
    cluster.start()
    cluster.safe_sql("CREATE TABLE ledger (id int PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp())")
    cluster.repo_url = repo_url
    return cluster


def test_round_trip_full_incremental_wal_push_restore_to_time(primary, tmp_path, pg_bin):
    needs_incremental(pg_bin)
    repo = primary.repo_url
    write_rows(primary, 1, 20)
    full = cli("backup", "--dsn", primary.dsn, "--repo", repo, "--kind", "full").stdout.strip()
    write_rows(primary, 21, 40)
    primary.safe_sql("DELETE FROM ledger WHERE id % 7 = 0")
    incremental = cli("backup", "--dsn", primary.dsn, "--repo", repo, "--kind", "incremental").stdout.strip()
    write_rows(primary, 41, 60)
    time.sleep(0.3)
    (target_time,) = primary.safe_sql("SELECT clock_timestamp()")[0]
    with primary.connect() as conn:
        truth = fingerprint(conn)
    time.sleep(0.3)
    write_rows(primary, 61, 80)  # committed after T: must not be restored
    primary.safe_sql("UPDATE ledger SET note = 'late' WHERE id < 5")
    primary.archive_current_wal()

    listed = json.loads(cli("list", "--repo", repo, "--json").stdout)
    assert [(b["id"], b["kind"], b["status"]) for b in listed] == [
        (full, "full", "DONE"),
        (incremental, "incremental", "DONE"),
    ]
    assert listed[1]["parent"] == full

    data, sock, port = tmp_path / "restored", tmp_path / "sock", free_port()
    sock.mkdir()
    done = cli("restore", "--repo", repo, "--to", str(data), "--target-time", target_time.isoformat(),
               "--start", "--port", str(port), "--socket-dir", str(sock))  # fmt: skip
    assert done.stdout.strip() == incremental
    assert "### Restoring backup" in done.stderr and "promoted" in done.stderr
    try:
        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            got = fingerprint(conn)
            newest = conn.execute("SELECT max(at) FROM ledger").fetchone()[0]
    finally:
        subprocess.run([str(primary.pg.tool("pg_ctl")), "-D", str(data), "-m", "fast", "-w", "stop"], check=True,
                       capture_output=True)  # fmt: skip
    assert got.diff(truth) == []
    assert got.tables["ledger"].rows == 60 - 5 and newest <= target_time
    assert not (data / "recovery.conf").exists()

    verified = json.loads(cli("verify", "--repo", repo, "--backup", "all", "--json").stdout)
    assert [v["ok"] for v in verified] == [True, True]
    assert cli("check", "--repo", repo).returncode == 0


def test_restore_test_fingerprints_are_recorded_and_compared(primary):
    repo = primary.repo_url
    write_rows(primary, 1, 10)
    backup_id = cli(
        "backup", "--dsn", primary.dsn, "--repo", repo, "--kind", "full", "--format", "plain"
    ).stdout.strip()
    primary.archive_current_wal()
    cli("verify", "--repo", repo)  # checksums only: verified, not restore-tested
    record = json.loads(cli("list", "--repo", repo, "--json").stdout)[0]
    assert record["verified_at"] and "restore_tested_at" not in record["options"]
    first = json.loads(cli("verify", "--repo", repo, "--restore-test", "--json").stdout)[0]
    assert first["ok"] and "restore test ok" in first["checked"]
    assert Fingerprint.from_dict(first["fingerprints"]["postgres"]).tables["ledger"].rows == 10
    record = json.loads(cli("list", "--repo", repo, "--json").stdout)[0]
    assert record["id"] == backup_id and record["verified_at"]
    assert record["fingerprints"]["restore_test"]["postgres"]["ledger"]["rows"] == 10
    assert record["options"]["restore_tested_at"] >= record["start_time"]
    second = json.loads(cli("verify", "--repo", repo, "--restore-test", "--json").stdout)[0]
    assert second["ok"] and second["fingerprints"] == first["fingerprints"]


def test_logical_round_trip_restores_the_dumped_rows(primary, make_cluster):
    pytest.importorskip("backup_tools.backup.logical", reason="backup/logical.py (logical backups) has not landed")
    pytest.importorskip("backup_tools.restore.logical", reason="restore/logical.py (logical restore) has not landed")
    repo = primary.repo_url
    write_rows(primary, 1, 25)
    with primary.connect() as conn:
        truth = fingerprint(conn)
    cli("backup", "--dsn", primary.dsn, "--repo", repo, "--kind", "logical")
    write_rows(primary, 26, 30)
    target = make_cluster("target")
    target.init()
    target.start()
    cli("restore", "--repo", repo, "--dsn", target.dsn)
    with target.connect() as conn:
        assert fingerprint(conn).diff(truth) == []


def test_bad_inputs_exit_2_with_one_actionable_line_and_change_nothing(primary, tmp_path):
    repo = primary.repo_url
    cli("backup", "--dsn", primary.dsn, "--repo", repo, "--kind", "full")
    repo_files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "repo" / "backups").rglob("*"))

    # a backup or recovery target the repository does not have: the operation failed (1), not the usage (2)
    done = cli(
        "restore", "--repo", repo, "--to", str(tmp_path / "x"), "--backup", "20990101T000000Z-full-dead", check=False
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "backup-tools restore: error: no backup '20990101T000000Z-full-dead' in the repository; "
        "run `backup-tools list` for the ids"
    ]
    done = cli(
        "restore",
        "--repo",
        repo,
        "--to",
        str(tmp_path / "y"),
        "--target-time",
        "2001-01-01T00:00:00+00:00",
        check=False,
    )
    assert done.returncode == 1 and "is before the oldest backup" in done.stderr
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())
    done = cli("restore", "--repo", repo, "--to", str(tmp_path / "z"), "--target-time", "yesterday", check=False)
    assert done.returncode == 2 and "invalid --target-time 'yesterday'" in done.stderr
    done = cli("restore", "--repo", repo, "--to", str(primary.data_dir), check=False)
    assert done.returncode == 2 and "is running in" in done.stderr and primary.is_running()
    done = cli("backup", "--dsn", "host=/nonexistent port=1 user=x password=sekret", "--repo", repo, "--kind", "full",
               check=False)  # fmt: skip
    assert done.returncode == 1 and "sekret" not in done.stderr and "password=***" in done.stderr
    warning, *errors = done.stderr.strip().splitlines()  # the password on argv is warned about first
    assert "warning" in warning and "PGPASSFILE" in warning and len(errors) == 1
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "repo" / "backups").rglob("*")) == repo_files


def test_help_keygen_and_prune():
    text = cli("--help").stdout
    for verb in ("backup", "wal-push", "wal-fetch", "list", "restore", "verify", "prune", "check", "keygen"):
        assert verb in text
    assert "examples:" in text and "PGPASSFILE" in text
    assert "--target-time" in cli("restore", "--help").stdout
    key = cli("keygen").stdout
    assert len(key.strip()) == 44 and key.endswith("\n")


def test_prune_dry_run_deletes_nothing(primary):
    repo = primary.repo_url
    cli("backup", "--dsn", primary.dsn, "--repo", repo, "--kind", "full")
    before = json.loads(cli("list", "--repo", repo, "--json").stdout)
    done = cli("prune", "--repo", repo, "--dry-run")
    assert "would delete 0 backup(s)" in done.stdout
    assert json.loads(cli("list", "--repo", repo, "--json").stdout) == before
