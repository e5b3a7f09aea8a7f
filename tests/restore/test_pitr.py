"""Point-in-time recovery: choosing the backup, recovery settings, refusals, WAL gaps, unreachable targets."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from backup_tools.backup.physical import physical_backup
from backup_tools.catalog import BackupRecord
from backup_tools.errors import BackupNotFound, RecoveryError, UsageError
from backup_tools.pg.ports import free_port
from backup_tools.repo.base import FileRepository
from backup_tools.repo.objects import open_envelope, store_object
from backup_tools.restore.physical import RestoreOptions, restore, server_running, start_restored, stop_restored
from backup_tools.restore.pitr import RecoveryTarget, choose_backup, configure_recovery, recovery_settings

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def quiet(_: str) -> None:
    """Swallow progress lines."""


def rec(n: int, *, status: str = "DONE", kind: str = "full") -> BackupRecord:
    """A backup that ran from day n 01:00 to 02:00, LSN n/0 .. n/1000."""
    return BackupRecord(
        id=f"b{n}", kind=kind, status=status, start_time=T0 + timedelta(days=n, hours=1),
        stop_time=T0 + timedelta(days=n, hours=2), start_lsn=f"{n:X}/0", stop_lsn=f"{n:X}/1000",
        options={"next_xid": str(1000 * n)},
    )  # fmt: skip


RECORDS = [rec(1), rec(2), rec(3, status="FAILED"), rec(4), rec(5, kind="logical")]


def test_choose_newest_backup_that_ended_before_the_target():
    assert choose_backup(RECORDS, None).id == "b4"
    assert choose_backup(RECORDS, RecoveryTarget(time=T0 + timedelta(days=2, hours=3))).id == "b2"
    assert choose_backup(RECORDS, RecoveryTarget(time=T0 + timedelta(days=3, hours=3))).id == "b2"  # b3 FAILED
    assert choose_backup(RECORDS, RecoveryTarget(time=T0 + timedelta(days=9))).id == "b4"  # logical ignored
    assert choose_backup(RECORDS, RecoveryTarget(lsn="2/2000")).id == "b2"
    assert choose_backup(RECORDS, RecoveryTarget(xid="2500")).id == "b2"
    assert choose_backup(RECORDS, RecoveryTarget(name="before-upgrade")).id == "b1"


def test_target_before_the_oldest_backup_is_a_clear_error():
    with pytest.raises(BackupNotFound, match=r"before the oldest backup b1 finished .* no backup in this repository"):
        choose_backup(RECORDS, RecoveryTarget(time=T0 + timedelta(days=1, hours=1, minutes=30)))


def test_target_before_the_chosen_backups_end_and_unknown_ids_are_errors():
    with pytest.raises(UsageError, match=r"is before the end of backup b4 .* pick an older backup"):
        choose_backup(RECORDS, RecoveryTarget(time=T0 + timedelta(days=2, hours=3)), backup_id="b4")
    with pytest.raises(BackupNotFound, match=r"no backup 'nope' in the repository; run `backup-tools list`"):
        choose_backup(RECORDS, None, backup_id="nope")
    with pytest.raises(BackupNotFound, match="b3 is FAILED, not DONE"):
        choose_backup(RECORDS, None, backup_id="b3")


def test_recovery_is_configured_the_postgresql_12_way(tmp_path):
    (tmp_path / "recovery.conf").write_text("restore_command = 'cp /x/%f %p'\n")
    (tmp_path / "postgresql.auto.conf").write_text("work_mem = '8MB'\n")
    target = RecoveryTarget(time=datetime(2026, 11, 22, 10, 0, tzinfo=UTC), inclusive=False)
    configure_recovery(tmp_path, recovery_settings(restore_command="fetch %f %p", target=target, archive=False))
    text = (tmp_path / "postgresql.auto.conf").read_text()
    assert (tmp_path / "recovery.signal").exists() and not (tmp_path / "recovery.conf").exists()
    assert "work_mem = '8MB'" in text and "restore_command = 'fetch %f %p'" in text
    assert "recovery_target_time = '2026-11-22 10:00:00+00:00'" in text
    assert "recovery_target_inclusive = 'off'" in text and "archive_mode = 'off'" in text


@pytest.fixture
def repo(tmp_path: Path) -> FileRepository:
    root = tmp_path / "repo"
    root.mkdir()
    return FileRepository(root)


@pytest.fixture
def primary(make_cluster, repo):
    cluster = make_cluster("primary")
    cluster.init(has_archiving=True, archive_url=repo.url)
    cluster.start()
    cluster.safe_sql("CREATE TABLE ledger (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    return cluster


def start_and_count(data: Path, pg_bin, tmp_path: Path, target: RecoveryTarget | None) -> int:
    sock = tmp_path / f"sock-{data.name}"
    sock.mkdir()
    port = free_port()
    try:
        start_restored(data, pg=pg_bin, port=port, socket_dir=sock, target=target, log=quiet, timeout=120)
        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres") as conn:
            return conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
    finally:
        stop_restored(data, pg=pg_bin)


@pytest.mark.integration
def test_restore_refuses_a_non_empty_directory_and_a_running_server(primary, repo, pg_bin, tmp_path):
    physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match=r"busy is not empty; restore into a new or empty directory, or pass --force"):
        restore(repo, to=busy, pg=pg_bin, log=quiet)
    assert [p.name for p in busy.iterdir()] == ["precious.txt"]
    pid = server_running(primary.data_dir)
    assert pid is not None
    with pytest.raises(UsageError, match=rf"a PostgreSQL server \(pid {pid}\) is running in .*pass --force"):
        restore(repo, to=primary.data_dir, pg=pg_bin, log=quiet)
    assert primary.is_running() and primary.safe_sql("SELECT count(*) FROM ledger") == [(0,)]
    restore(repo, to=busy, pg=pg_bin, options=RestoreOptions(force=True), log=quiet)
    assert not (busy / "precious.txt").exists() and (busy / "recovery.signal").exists()


@pytest.mark.integration
def test_wal_gap_before_target_works_beyond_refuses(primary, repo, pg_bin, tmp_path):
    physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    primary.safe_sql("INSERT INTO ledger (id) SELECT generate_series(1, 10)")
    time.sleep(0.2)
    (before_gap,) = primary.safe_sql("SELECT clock_timestamp()")[0]
    time.sleep(0.2)
    primary.safe_sql("INSERT INTO ledger (id) VALUES (11)")  # a later commit in the same segment ends recovery there
    primary.archive_current_wal()
    primary.safe_sql("INSERT INTO ledger (id) SELECT generate_series(12, 20)")
    gap = primary.archive_current_wal()
    primary.safe_sql("INSERT INTO ledger (id) SELECT generate_series(21, 30)")
    (after_gap,) = primary.safe_sql("SELECT clock_timestamp()")[0]
    primary.safe_sql("INSERT INTO ledger (id) VALUES (31)")
    primary.archive_current_wal()
    primary.archive_current_wal()
    repo.delete(f"wal/{gap}")

    target = RecoveryTarget(time=before_gap)
    data = tmp_path / "before"
    restore(repo, to=data, pg=pg_bin, options=RestoreOptions(target=target), log=quiet)
    assert start_and_count(data, pg_bin, tmp_path, target) == 10

    with pytest.raises(
        RecoveryError, match=rf"WAL {gap}\.\.{gap} \(1 segment\(s\)\) is missing .* give a recovery target"
    ):
        restore(repo, to=tmp_path / "latest", pg=pg_bin, log=quiet)
    assert not any((tmp_path / "latest").iterdir()) if (tmp_path / "latest").exists() else True

    target = RecoveryTarget(time=after_gap)
    data = tmp_path / "beyond"
    restore(repo, to=data, pg=pg_bin, options=RestoreOptions(target=target), log=quiet)
    with pytest.raises(RecoveryError, match=r"recovery ended before the target .* was reached.*server stopped"):
        start_and_count(data, pg_bin, tmp_path, target)
    assert server_running(data) is None


@pytest.mark.integration
def test_target_after_the_last_archived_commit_is_a_recovery_error(primary, repo, pg_bin, tmp_path):
    physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    primary.safe_sql("INSERT INTO ledger (id) VALUES (1)")
    primary.archive_current_wal()
    target = RecoveryTarget(time=datetime.now(UTC) + timedelta(hours=1))
    data = tmp_path / "future"
    restore(repo, to=data, pg=pg_bin, options=RestoreOptions(target=target), log=quiet)
    with pytest.raises(RecoveryError, match="recovery ended before the target up to and including time"):
        start_and_count(data, pg_bin, tmp_path, target)
    assert server_running(data) is None


def archive_batches(primary, batches: int) -> list[str]:
    """Commit `batches` batches of ledger rows, each in its own archived WAL segment; return the segment names."""
    names = []
    for n in range(batches):
        primary.safe_sql("INSERT INTO ledger (id) SELECT generate_series(%s::int, %s::int)", (n * 1000 + 1, n * 1000 + 1000))
        names.append(primary.archive_current_wal())
    return names


def restore_and_start(repo, pg_bin, tmp_path: Path, name: str):
    """`backup-tools restore --start` to the end of the archive, as a user runs it."""
    sock = tmp_path / f"sock-{name}"
    sock.mkdir()
    return subprocess.run(
        [sys.executable, "-m", "backup_tools", "restore", "--repo", repo.url, "--to", str(tmp_path / name),
         "--pg-bin", str(pg_bin.bindir), "--start", "--port", str(free_port()), "--socket-dir", str(sock)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.integration
def test_a_misnamed_wal_object_stops_the_restore_instead_of_promoting_early(primary, repo, pg_bin, tmp_path):
    physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    segments = archive_batches(primary, 4)
    repo.delete(f"wal/{segments[1]}")
    (repo.root / "wal" / segments[1]).write_bytes((repo.root / "wal" / segments[0]).read_bytes())  # a sync mistake
    done = restore_and_start(repo, pg_bin, tmp_path, "misnamed")
    assert done.returncode != 0, done.stdout
    assert f"is not the WAL file {segments[1]}: it was archived as {segments[0]}" in done.stderr
    assert server_running(tmp_path / "misnamed") is None


@pytest.mark.integration
def test_recovery_that_ends_before_the_end_of_the_archive_fails_the_restore(primary, repo, pg_bin, tmp_path):
    physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    segments = archive_batches(primary, 4)
    plain = tmp_path / segments[1]
    with open_envelope(repo, f"wal/{segments[1]}") as src:
        data = bytearray(src.read())
    data[40_000] ^= 0xFF  # inside a record: its CRC no longer matches, but the object's own checksum will
    plain.write_bytes(bytes(data))
    repo.delete(f"wal/{segments[1]}")
    store_object(repo, f"wal/{segments[1]}", plain, codec="zstd", sealing=None, scope="wal",
                 envelope={"name": segments[1]})  # fmt: skip
    done = restore_and_start(repo, pg_bin, tmp_path, "early")
    assert done.returncode == 1, done.stdout
    assert "recovery ended early: redo ended at" in done.stderr
    assert f"the archive holds WAL up to {segments[-1]}" in done.stderr
    assert server_running(tmp_path / "early") is None


@pytest.mark.integration
def test_a_started_restore_fetches_the_archive_ahead_of_recovery(primary, repo, pg_bin, tmp_path):
    physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    segments = archive_batches(primary, 12)
    try:
        done = restore_and_start(repo, pg_bin, tmp_path, "followed")
        assert done.returncode == 0, done.stderr
        fetched = re.search(r"### Fetched (\d+) WAL file\(s\) ahead of recovery while it ran\n", done.stderr)
        assert fetched and int(fetched.group(1)) >= 6, done.stderr  # the first few were prefetched before the start
        log = (tmp_path / "followed.log").read_text()
        assert f'restored log file "{segments[-1]}" from archive' in log
        assert not (tmp_path / "followed" / "pg_wal" / "pgdrill-prefetch").exists()
        port = int(re.search(r"on port (\d+)", done.stderr).group(1))
        with psycopg.connect(host=str(tmp_path / "sock-followed"), port=port, user="postgres", dbname="postgres") as conn:
            assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 12_000
    finally:
        stop_restored(tmp_path / "followed", pg=pg_bin)


@pytest.mark.integration
def test_a_misnamed_segment_ahead_of_recovery_is_never_handed_to_it(primary, repo, pg_bin, tmp_path):
    physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    segments = archive_batches(primary, 10)
    repo.delete(f"wal/{segments[8]}")
    (repo.root / "wal" / segments[8]).write_bytes((repo.root / "wal" / segments[7]).read_bytes())
    done = restore_and_start(repo, pg_bin, tmp_path, "misnamed-ahead")
    assert done.returncode != 0, done.stdout
    assert f"is not the WAL file {segments[8]}: it was archived as {segments[7]}" in done.stderr
    assert "ahead of recovery while it ran; it stopped at:" in done.stderr
    assert server_running(tmp_path / "misnamed-ahead") is None
