"""Logical backups and restores on a real server: formats, snapshot-exact fingerprints, and bad input."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from backup_tools.backup.logical import DumpOptions, backup_logical
from backup_tools.errors import (
    BackupNotFound,
    BinaryNotFound,
    ConnectionFailed,
    IntegrityCheckFailed,
    RepositoryError,
    ToolFailed,
    UsageError,
    VersionMismatch,
)
from backup_tools.pg.bin import PgBin, find_pg_bin
from backup_tools.pg.checks import Fingerprint
from backup_tools.pg.ports import free_port
from backup_tools.repo.base import FileRepository
from backup_tools.restore.logical import LogicalRestoreOptions, restore_logical
from fixtures.seed import APP_TABLES
from tests.support.logical_env import *  # noqa: F403  (fixtures: server, source, target, repo)
from tests.support.logical_env import Db, new_db, repo_snapshot

pytestmark = pytest.mark.integration
PG15 = Path("/usr/lib/postgresql/15/bin")


@pytest.mark.parametrize(
    ("fmt", "jobs", "compression"),
    [
        pytest.param("custom", 1, None, id="custom"),
        pytest.param("custom", 1, "zstd", id="custom-zstd"),
        pytest.param("directory", 2, None, id="directory-j2"),
        pytest.param("directory", 2, "gzip", id="directory-j2-gzip"),
        pytest.param("plain", 1, None, id="plain"),
        pytest.param("plain", 1, "gzip", id="plain-gzip"),
        pytest.param("plain", 1, "zstd", id="plain-zstd"),
    ],
)
def test_round_trip_restores_exactly_the_fingerprinted_rows(source, target, repo, pg_bin, fmt, jobs, compression):
    truth = source.fingerprint()
    record = backup_logical(source.dsn, repo, DumpOptions(fmt=fmt, jobs=jobs, compression=compression), pg=pg_bin)
    assert record.status == "DONE" and record.kind == "logical"
    assert Fingerprint.from_dict(record.fingerprints) == truth
    assert set(record.fingerprints) == set(APP_TABLES)
    assert record.system_identifier and record.pg_version.startswith(str(pg_bin.major))
    assert record.stop_time >= record.start_time
    assert [b.id for b in repo.list_backups()] == [record.id]
    for entry in record.files:  # every object is stored with the size and sha256 the catalog says
        stored = repo.get_bytes(f"backups/{record.id}/{entry.name}", sha256=entry.sha256)
        assert len(stored) == entry.size
    if fmt == "directory":
        assert any(e.name.startswith("dump/toc.dat") for e in record.files) and len(record.files) > 2
    if compression:
        assert all(e.name.endswith({"gzip": ".gz", "zstd": ".zst"}[compression]) for e in record.files)

    result = restore_logical(repo, record.id, target.dsn, LogicalRestoreOptions(jobs=jobs), pg=pg_bin)
    assert result.ok and set(result.checked) == set(APP_TABLES)
    assert target.fingerprint() == truth


def test_fingerprints_come_from_the_dump_snapshot_while_a_writer_changes_data(source, target, repo, pg_bin):
    stop, writes = threading.Event(), []

    def writer() -> None:
        with source.connect() as conn:
            while not stop.is_set():
                conn.execute("UPDATE users SET full_name = full_name || '.' WHERE id = %s", [len(writes) % 10 + 1])
                conn.execute("INSERT INTO users SELECT id + 1000 + %s, email || %s, full_name, role, created_at, "
                             "updated_at FROM users WHERE id = 1", [len(writes), str(len(writes))])  # fmt: skip
                writes.append(1)
                time.sleep(0.005)

    def during_dump(message: str) -> None:
        if "snapshot" in message:  # after the fingerprints, before pg_dump reads: a committed change it must not see
            with source.connect() as conn:
                conn.execute("DELETE FROM chat_messages WHERE id <= 100")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(0.1)
        record = backup_logical(source.dsn, repo, DumpOptions(fmt="directory", jobs=2), pg=pg_bin, log=during_dump)
        time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    assert len(writes) > 5
    recorded = Fingerprint.from_dict(record.fingerprints)
    assert recorded.tables["chat_messages"].rows == 600  # the delete committed after the snapshot
    assert source.fingerprint().diff(recorded)  # the live data moved on
    result = restore_logical(repo, record.id, target.dsn, pg=pg_bin)
    assert result.ok
    assert target.fingerprint() == recorded


def test_schema_only_then_data_only(source, target, repo, pg_bin):
    schema = backup_logical(source.dsn, repo, DumpOptions(schema_only=True), pg=pg_bin)
    data = backup_logical(source.dsn, repo, DumpOptions(data_only=True), pg=pg_bin)
    assert schema.fingerprints == {} and set(data.fingerprints) == set(APP_TABLES)
    restore_logical(repo, schema.id, target.dsn, pg=pg_bin)
    assert target.tables() == set(APP_TABLES) and target.scalar("SELECT count(*) FROM users") == 0
    result = restore_logical(repo, data.id, target.dsn, pg=pg_bin)
    assert result.ok and target.fingerprint() == source.fingerprint()


def test_table_specific_backup_and_selected_table_restore(source, server, repo, pg_bin):
    some = backup_logical(source.dsn, repo, DumpOptions(tables=("users", "clients")), pg=pg_bin)
    assert set(some.fingerprints) == {"users", "clients"}
    first = new_db(server, seeded=False)
    assert restore_logical(repo, some.id, first.dsn, pg=pg_bin).ok
    assert first.tables() == {"users", "clients"}

    full = backup_logical(source.dsn, repo, pg=pg_bin)
    second = new_db(server, seeded=False)
    result = restore_logical(repo, full.id, second.dsn, LogicalRestoreOptions(tables=("users",)), pg=pg_bin)
    assert result.ok and result.checked == ("users",) and second.tables() == {"users"}


def test_restore_reports_fingerprint_differences(source, target, repo, pg_bin):
    schema = backup_logical(source.dsn, repo, DumpOptions(schema_only=True), pg=pg_bin)
    data = backup_logical(source.dsn, repo, DumpOptions(data_only=True), pg=pg_bin)
    restore_logical(repo, schema.id, target.dsn, pg=pg_bin)
    with target.connect() as conn:  # a trigger in the target silently rewrites rows as they are loaded
        conn.execute("CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$BEGIN NEW.full_name := upper(NEW.full_name); RETURN NEW; END$$")  # fmt: skip
        conn.execute("CREATE TRIGGER shout BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION shout()")
    with pytest.raises(IntegrityCheckFailed, match=r"users: same row count \(10\) but row contents differ"):
        restore_logical(repo, data.id, target.dsn, pg=pg_bin)
    with target.connect() as conn:
        conn.execute("TRUNCATE users, clients, cases, documents, chat_messages")
    result = restore_logical(repo, data.id, target.dsn, LogicalRestoreOptions(strict=False), pg=pg_bin)
    assert not result.ok and result.differences == ("users: same row count (10) but row contents differ",)


def _assert_unchanged(source: Db, before: Fingerprint, repo: FileRepository, repo_before: dict[str, bytes]) -> None:
    assert source.fingerprint() == before
    assert repo_snapshot(repo) == repo_before


@pytest.mark.parametrize(
    ("dsn", "error", "text"),
    [
        pytest.param("host=127.0.0.1 port={port} user=postgres dbname=postgres password=hunter2-secret",
                     ConnectionFailed, r"could not connect for a logical backup to .*password=\*\*\*.*refused", id="nothing-listens"),
        pytest.param("host=127.0.0.1 port password=hunter2-secret", UsageError, "invalid connection string", id="malformed"),
        pytest.param("postgresql://postgres:hunter2-secret@127.0.0.1:{port}/x?bogus=1", UsageError,
                     r'invalid URI query parameter: "bogus"', id="bad-uri"),
    ],
)  # fmt: skip
def test_bad_dsn_fails_fast_and_changes_nothing(source, repo, pg_bin, dsn, error, text):
    before, repo_before = source.fingerprint(), repo_snapshot(repo)
    started = time.monotonic()
    with pytest.raises(error, match=text) as info:
        backup_logical(dsn.format(port=free_port()), repo, pg=pg_bin)
    assert time.monotonic() - started < 5
    assert "hunter2" not in str(info.value)
    _assert_unchanged(source, before, repo, repo_before)


def test_wrong_password_fails_fast_unechoed_and_the_right_one_never_reaches_argv(
    server, source, target, repo, pg_bin, monkeypatch
):
    secret, wrong = "Corr3ct:horse\\battery staple", "Wr0ng-guess-4711"
    with server.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE alice LOGIN SUPERUSER PASSWORD {}").format(sql.Literal(secret)))
    hba = server.data_dir / "pg_hba.conf"
    hba.write_text("host all alice 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    server.safe_sql("SELECT pg_reload_conf()")
    base = f"host=127.0.0.1 port={server.port} user=alice"
    before, repo_before = source.fingerprint(), repo_snapshot(repo)

    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match='password authentication failed for user "alice"') as info:
        backup_logical(make_conninfo(base, dbname=source.name, password=wrong), repo, pg=pg_bin)
    assert time.monotonic() - started < 5
    assert wrong not in str(info.value) and "password=***" in str(info.value)
    _assert_unchanged(source, before, repo, repo_before)

    seen: list[tuple[list[str], dict[str, str], int | None, str]] = []
    real_popen = subprocess.Popen

    def spy(args, *rest, **kwargs):
        env = dict(kwargs.get("env") or {})
        passfile = Path(env["PGPASSFILE"]) if "PGPASSFILE" in env else None
        mode = passfile.stat().st_mode & 0o777 if passfile else None
        seen.append(([str(a) for a in args], env, mode, passfile.read_text() if passfile else ""))
        return real_popen(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    record = backup_logical(make_conninfo(base, dbname=source.name, password=secret), repo, pg=pg_bin)
    result = restore_logical(repo, record.id, make_conninfo(base, dbname=target.name, password=secret), pg=pg_bin)
    assert record.is_good and result.ok
    tools = [
        (argv, env, mode, text)
        for argv, env, mode, text in seen
        if Path(argv[0]).name in ("pg_dump", "pg_restore") and "--version" not in argv
    ]
    assert {Path(argv[0]).name for argv, *_ in tools} == {"pg_dump", "pg_restore"}
    for argv, env, mode, text in tools:
        assert not any("Corr3ct" in a for a in argv)
        assert "PGPASSWORD" not in env and mode == 0o600
        assert text == "*:*:*:*:Corr3ct\\:horse\\\\battery staple\n"  # ':' and '\' escaped for libpq
        assert not Path(env["PGPASSFILE"]).exists()  # removed afterwards
    assert not any(b"Corr3ct" in data for data in repo_snapshot(repo).values())


def test_missing_binary_is_named_and_changes_nothing(source, target, repo, pg_bin, tmp_path):
    empty = PgBin(bindir=tmp_path, version=pg_bin.version, major=pg_bin.major, source="test")
    before, repo_before = source.fingerprint(), repo_snapshot(repo)
    with pytest.raises(BinaryNotFound, match=rf"pg_dump not found in {tmp_path}"):
        backup_logical(source.dsn, repo, pg=empty)
    _assert_unchanged(source, before, repo, repo_before)
    record = backup_logical(source.dsn, repo, pg=pg_bin)
    with pytest.raises(BinaryNotFound, match="pg_restore not found"):
        restore_logical(repo, record.id, target.dsn, pg=empty)
    assert target.tables() == set()


@pytest.mark.skipif(not (PG15 / "postgres").exists(), reason=f"PostgreSQL 15 server programs not installed in {PG15}")
@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_compressed_logical_backup_round_trips_on_postgresql_15(make_cluster, tmp_path, fmt):
    """pg_dump before 16 refuses `--compress=none`: the stored-object codec must ask it for level 0 instead."""
    pg15 = find_pg_bin(PG15)
    cluster = make_cluster("dump15", pg=pg15)
    cluster.init()
    cluster.start()
    cluster.safe_sql("CREATE TABLE kept AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g")
    cluster.safe_sql("CREATE DATABASE restored")
    repo15 = FileRepository(tmp_path / "repo15")
    record = backup_logical(cluster.dsn, repo15, DumpOptions(fmt=fmt, compression="zstd"), pg=pg15)
    assert record.status == "DONE" and record.pg_version.startswith("15")
    assert all(e.name.endswith(".zst") for e in record.files)
    result = restore_logical(repo15, record.id, cluster.dsn_for("restored"), pg=pg15)
    assert result.ok
    assert cluster.safe_sql("SELECT count(*), sum(length(v)) FROM kept", dbname="restored") == [(500, 16000)]


@pytest.mark.skipif(not (PG15 / "pg_dump").exists(), reason=f"PostgreSQL 15 client programs not installed in {PG15}")
def test_pg_dump_older_than_the_server_is_refused(source, repo, pg_bin):
    if pg_bin.major <= 15:  # the tox envs pg14 and pg15: Debian's pg_dump 15 is not older than the server
        pytest.skip(f"needs a server newer than PostgreSQL 15; binaries are {pg_bin.version}")
    old = PgBin(bindir=PG15, version="15", major=15, source="test")
    before, repo_before = source.fingerprint(), repo_snapshot(repo)
    with pytest.raises(VersionMismatch, match=rf"pg_dump 15\.\d+ .* is older than PostgreSQL {pg_bin.major}"):
        backup_logical(source.dsn, repo, pg=old)
    _assert_unchanged(source, before, repo, repo_before)


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_damaged_object_is_named_and_nothing_is_restored(source, target, repo, pg_bin, damage):
    record = backup_logical(source.dsn, repo, DumpOptions(fmt="directory"), pg=pg_bin)
    victim = max(record.files, key=lambda f: f.size)
    path = repo.root / "backups" / record.id / victim.name
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        del data[len(data) // 2 :]
    else:
        data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityCheckFailed, match=re.escape(f"backups/{record.id}/{victim.name}")):
        restore_logical(repo, record.id, target.dsn, pg=pg_bin)
    assert target.tables() == set()


def test_restore_error_in_the_middle_surfaces(source, server, repo, pg_bin):
    custom = backup_logical(source.dsn, repo, pg=pg_bin)
    target = new_db(server, seeded=False)
    target.execute("CREATE TABLE documents (id int)")
    with pytest.raises(ToolFailed, match=r'pg_restore failed \(exit 1\).*relation "documents" already exists'):
        restore_logical(repo, custom.id, target.dsn, LogicalRestoreOptions(clean=False), pg=pg_bin)
    assert target.tables() == {"documents"}  # one transaction: cases, chat_messages, clients were rolled back

    directory = backup_logical(source.dsn, repo, DumpOptions(fmt="directory", jobs=2), pg=pg_bin)
    parallel = new_db(server, seeded=False)
    parallel.execute("CREATE TABLE documents (id int)")
    with pytest.raises(ToolFailed, match=r'relation "documents" already exists'):
        restore_logical(repo, directory.id, parallel.dsn, LogicalRestoreOptions(clean=False, jobs=2), pg=pg_bin)
    assert "cases" in parallel.tables()  # no single transaction with -j: the error still stops and surfaces


def test_second_concurrent_backup_fails_fast_on_the_lock(source, repo, pg_bin):
    inside, release, results = threading.Event(), threading.Event(), {}

    def hold(message: str) -> None:
        if "snapshot" in message:
            inside.set()
            release.wait(60)

    first = threading.Thread(target=lambda: results.update(first=backup_logical(source.dsn, repo, pg=pg_bin, log=hold)))
    first.start()
    try:
        assert inside.wait(60)
        repo_before, started = repo_snapshot(repo), time.monotonic()
        with pytest.raises(RepositoryError, match=r"is locked by pid \d+"):
            backup_logical(source.dsn, repo, pg=pg_bin)
        assert time.monotonic() - started < 5
        assert repo_snapshot(repo) == repo_before
    finally:
        release.set()
        first.join(60)
    assert [(r.id, r.status) for r in repo.list_backups()] == [(results["first"].id, "DONE")]


def test_failed_dump_is_catalogued_failed_and_never_restored(source, target, repo, pg_bin):
    def kill_the_snapshot(message: str) -> None:
        if "snapshot" in message:  # the exporting session dies before pg_dump can import its snapshot
            source.scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'")  # fmt: skip

    with pytest.raises(ToolFailed, match=r"pg_dump failed \(exit 1\).*snapshot"):
        backup_logical(source.dsn, repo, pg=pg_bin, log=kill_the_snapshot)
    (record,) = repo.list_backups()
    assert record.status == "FAILED" and not record.is_good and record.files == ()
    assert "pg_dump failed" in record.options["error"]
    assert repo.list(f"backups/{record.id}/") == [f"backups/{record.id}/catalog.json"]
    with pytest.raises(BackupNotFound, match=f"backup {record.id} is FAILED, not DONE"):
        restore_logical(repo, record.id, target.dsn, pg=pg_bin)
    with pytest.raises(BackupNotFound, match="no backup 'nope'"):
        restore_logical(repo, "nope", target.dsn, pg=pg_bin)
    assert target.tables() == set()


def test_cli_backup_and_restore_of_kind_logical(source, target, repo, capsys):
    from backup_tools.cli.main import main

    assert main(["backup", "--dsn", source.dsn, "--repo", repo.url, "--kind", "logical"]) == 0
    backup_id = capsys.readouterr().out.strip().splitlines()[-1]
    record = repo.read_catalog(backup_id)
    assert record.kind == "logical" and record.is_good and record.files[0].codec == "zstd"
    assert main(["restore", "--repo", repo.url, "--dsn", target.dsn, "--backup", backup_id]) == 0
    assert target.fingerprint() == Fingerprint.from_dict(record.fingerprints)
