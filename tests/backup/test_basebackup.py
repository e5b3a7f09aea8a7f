"""Physical backups: full and incremental into a file:// repository, catalog, verification, bad inputs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backup_tools.backup.physical import physical_backup
from backup_tools.errors import BackupNotFound, IntegrityCheckFailed, RepositoryError, UsageError, VersionMismatch
from backup_tools.pg.bin import PgBin, find_pg_bin
from backup_tools.pg.checks import fingerprint
from backup_tools.repo.base import FileRepository
from backup_tools.restore.physical import RestoreOptions, restore, start_restored, stop_restored
from backup_tools.restore.pitr import RecoveryTarget
from tests.support.pgversions import needs_incremental

pytestmark = pytest.mark.integration
PG15 = Path("/usr/lib/postgresql/15/bin")


def quiet(_: str) -> None:
    """Swallow progress lines."""


def snapshot(root: Path) -> dict[str, int]:
    """Every backup file of a repository with its size (WAL is left out: the running primary keeps archiving)."""
    files = {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
    return {k: v for k, v in files.items() if not k.startswith("wal/")}


@pytest.fixture
def repo(tmp_path: Path) -> FileRepository:
    """An empty file:// repository."""
    root = tmp_path / "repo"
    root.mkdir()
    return FileRepository(root)


@pytest.fixture
def primary(make_cluster, repo):
    """A running primary archiving WAL into repo, with a small table."""
    cluster = make_cluster("primary")
    cluster.init(has_archiving=True, archive_url=repo.url)
    cluster.start()
    cluster.safe_sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    cluster.safe_sql("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 500) g")
    return cluster


def restored_fingerprint(make_cluster, repo, pg_bin: PgBin, tmp_path: Path, **restore_args):
    """Restore into a new directory, start it, and fingerprint its public schema."""
    data = tmp_path / f"restored-{len(list(tmp_path.glob('restored-*')))}"
    result = restore(repo, to=data, pg=pg_bin, options=RestoreOptions(**restore_args), log=quiet)
    sock = tmp_path / f"sock-{data.name}"
    sock.mkdir()
    from backup_tools.pg.ports import free_port

    port = free_port()
    try:
        start_restored(data, pg=pg_bin, port=port, socket_dir=sock, target=restore_args.get("target"), log=quiet)
        import psycopg

        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            return result, fingerprint(conn)
    finally:
        stop_restored(data, pg=pg_bin)


def test_full_backup_is_catalogued_verified_and_restores(primary, repo, pg_bin, make_cluster, tmp_path):
    done = physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet).record
    assert done.status == "DONE" and done.kind == "full"
    assert done.start_lsn and done.stop_lsn and done.timeline == 1
    (sysid,) = primary.safe_sql("SELECT system_identifier::text FROM pg_control_system()")[0]
    assert done.system_identifier == sysid
    assert {f.name for f in done.files} == {"backup_manifest", "base.tar.zst", "pg_wal.tar.zst"}
    assert all(len(f.sha256) == 64 and f.plain_sha256 for f in done.files)
    assert not (repo.root / "staging" / done.id).exists()
    with primary.connect() as conn:
        truth = fingerprint(conn)
    primary.archive_current_wal()
    _, got = restored_fingerprint(make_cluster, repo, pg_bin, tmp_path)
    assert got.diff(truth) == []


def test_incremental_chain_is_exact_under_delete_truncate_and_ddl(primary, repo, pg_bin, make_cluster, tmp_path):
    needs_incremental(pg_bin)
    primary.safe_sql("CREATE TABLE audit (id int PRIMARY KEY, what text)")
    primary.safe_sql("INSERT INTO audit SELECT g, 'a' || g FROM generate_series(1, 300) g")
    primary.safe_sql("CREATE TABLE doomed (id int PRIMARY KEY)")
    primary.safe_sql("INSERT INTO doomed SELECT generate_series(1, 50)")
    full = physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet).record
    # DELETE, TRUNCATE and DDL: the changes an `updated_at` export misses
    primary.safe_sql("DELETE FROM items WHERE id % 3 = 0")
    primary.safe_sql("TRUNCATE audit")
    primary.safe_sql("INSERT INTO audit VALUES (1, 'after truncate')")
    primary.safe_sql("ALTER TABLE items ADD COLUMN flag boolean DEFAULT true")
    primary.safe_sql("DROP TABLE doomed")
    primary.safe_sql("CREATE TABLE fresh AS SELECT g AS id FROM generate_series(1, 20) g")
    inc1 = physical_backup(dsn=primary.dsn, repo=repo, kind="incremental", pg=pg_bin, log=quiet).record
    with primary.connect() as conn:
        truth1 = fingerprint(conn)
    primary.safe_sql("UPDATE items SET note = 'changed' WHERE id < 10")
    primary.safe_sql("DELETE FROM fresh")
    inc2 = physical_backup(dsn=primary.dsn, repo=repo, kind="incremental", pg=pg_bin, log=quiet).record
    with primary.connect() as conn:
        truth2 = fingerprint(conn)
    assert (inc1.parent, inc2.parent) == (full.id, inc1.id)
    assert inc1.size < full.size / 2  # only changed blocks
    primary.safe_sql("INSERT INTO items VALUES (100000, 'after the last backup')")
    # restore each incremental to its own end (no later WAL replayed): exactly the state at that backup
    result, got = restored_fingerprint(
        make_cluster, repo, pg_bin, tmp_path, backup_id=inc1.id, target=RecoveryTarget(immediate=True)
    )
    assert result.chain == (full.id, inc1.id)
    assert got.diff(truth1) == [] and "doomed" not in got.tables and got.tables["audit"].rows == 1
    result, got = restored_fingerprint(make_cluster, repo, pg_bin, tmp_path, target=RecoveryTarget(immediate=True))
    assert result.chain == (full.id, inc1.id, inc2.id)
    assert got.diff(truth2) == []


def test_plain_format_backup_restores(primary, repo, pg_bin, make_cluster, tmp_path):
    done = physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, fmt="plain", log=quiet).record
    assert {f.name for f in done.files} == {"backup_manifest", "base.tar.zst"}
    with primary.connect() as conn:
        truth = fingerprint(conn)
    _, got = restored_fingerprint(make_cluster, repo, pg_bin, tmp_path, target=RecoveryTarget(immediate=True))
    assert got.diff(truth) == []


@pytest.fixture
def pg15_primary(make_cluster, repo):
    """A started PostgreSQL 15 cluster archiving into repo (Debian's postgresql-15), or a skip saying it is missing."""
    if not (PG15 / "postgres").exists():
        pytest.skip(f"PostgreSQL 15 binaries not installed at {PG15} (Debian package postgresql-15)")
    old = make_cluster("old", pg=find_pg_bin(PG15))
    old.init(has_archiving=True, archive_url=repo.url)
    old.start()
    return old


def test_incremental_on_postgres_15_is_a_clear_error(pg15_primary, repo):
    old, pg15 = pg15_primary, pg15_primary.pg
    before = snapshot(repo.root)
    with pytest.raises(VersionMismatch, match=r"incremental backups need PostgreSQL 17 or later, the server runs 15"):
        physical_backup(dsn=old.dsn, repo=repo, kind="incremental", pg=pg15, log=quiet)
    assert snapshot(repo.root) == before


def test_incremental_without_summarize_wal_is_a_clear_error(make_cluster, repo, pg_bin):
    needs_incremental(pg_bin)
    cluster = make_cluster("nosummary")
    cluster.init(has_archiving=True, archive_url=repo.url, settings={"summarize_wal": "off"})
    cluster.start()
    physical_backup(dsn=cluster.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    before = snapshot(repo.root)
    with pytest.raises(UsageError, match="incremental backups need summarize_wal = on, and it is off"):
        physical_backup(dsn=cluster.dsn, repo=repo, kind="incremental", pg=pg_bin, log=quiet)
    assert snapshot(repo.root) == before
    assert (
        cluster.safe_sql("SELECT count(*) FROM items")[0][0]
        if cluster.sql("SELECT 1 FROM items").error is None
        else True
    )


def test_incremental_without_a_full_backup_is_refused(primary, repo, pg_bin):
    needs_incremental(pg_bin)
    with pytest.raises(BackupNotFound, match="no finished full backup .* take a --kind full backup first"):
        physical_backup(dsn=primary.dsn, repo=repo, kind="incremental", pg=pg_bin, log=quiet)
    assert repo.list_backups() == []


def test_second_concurrent_backup_fails_fast(primary, repo, pg_bin):
    with repo.lock():
        before = snapshot(repo.root)
        began = time.monotonic()
        with pytest.raises(RepositoryError, match=r"is locked by pid \d+ .*another backup-tools run"):
            physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
        assert time.monotonic() - began < 5
        assert snapshot(repo.root) == before
    assert repo.list_backups() == []


def test_backup_of_another_cluster_is_refused(primary, repo, pg_bin, make_cluster):
    physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    other = make_cluster("other")
    other.init(allows_streaming=True)
    other.start()
    before = snapshot(repo.root)
    with pytest.raises(UsageError, match=r"holds backups of database system \d+, this server is system \d+"):
        physical_backup(dsn=other.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    assert snapshot(repo.root) == before


def test_failure_during_backup_is_catalogued_failed(primary, repo, pg_bin, monkeypatch):
    import backup_tools.backup.physical as backup_module

    def broken(*_args, **_kwargs):
        raise IntegrityCheckFailed("pg_verifybackup rejected the backup (simulated)")

    monkeypatch.setattr(backup_module, "verify_dir", broken)
    with pytest.raises(IntegrityCheckFailed, match=r"backup .* FAILED: pg_verifybackup rejected"):
        physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet)
    (record,) = repo.list_backups()
    assert record.status == "FAILED" and "simulated" in record.options["error"]
    assert not any((repo.root / "staging").iterdir())
    # base.tar was stored while pg_basebackup wrote it; a failed backup leaves only its FAILED catalog
    assert repo.list(f"backups/{record.id}/") == [f"backups/{record.id}/catalog.json"]
    with pytest.raises(BackupNotFound, match="no finished physical backup"):
        restore(repo, to=primary.base_dir / "nowhere", pg=pg_bin, log=quiet)


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_damaged_backup_object_is_named_and_nothing_is_left(primary, repo, pg_bin, tmp_path, damage):
    done = physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet).record
    victim = repo.root / "backups" / done.id / "base.tar.zst"
    data = bytearray(victim.read_bytes())
    victim.unlink()  # the staged file was hard-linked: write a new inode
    victim.write_bytes(
        bytes(data[: len(data) // 2])
        if damage == "truncate"
        else bytes(data[:1000]) + bytes([data[1000] ^ 4]) + bytes(data[1001:])
    )
    before = snapshot(repo.root)
    target = tmp_path / "restored"
    with pytest.raises(IntegrityCheckFailed, match=r"backups/.*/base\.tar\.zst"):
        restore(repo, to=target, pg=pg_bin, log=quiet)
    assert target.is_dir() and not any(target.iterdir())
    assert snapshot(repo.root) == before
    from backup_tools.lifecycle.verify import verify_backup

    result = verify_backup(repo, done, pg=pg_bin, log=quiet)
    assert not result.ok and "base.tar.zst" in result.problems[0]
    assert repo.read_catalog(done.id).verified_at is None


def test_encrypted_backup_needs_its_key_and_restores_with_it(primary, repo, pg_bin, make_cluster, tmp_path):
    from backup_tools.errors import EncryptionKeyError
    from backup_tools.security.keys import generate_key_file_text

    key = tmp_path / "backup.key"
    key.write_text(generate_key_file_text())
    done = physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, key_file=str(key), log=quiet).record
    assert done.encryption and done.encryption["wrapping"] == "keyfile"
    stored = (repo.root / "backups" / done.id / "base.tar.zst").read_bytes()
    assert stored.startswith(b"PGDE") and b"PG_VERSION" not in stored
    with primary.connect() as conn:
        truth = fingerprint(conn)
    with pytest.raises(EncryptionKeyError, match="pass --key-file FILE"):
        restore(repo, to=tmp_path / "nokey", pg=pg_bin, log=quiet)
    assert not (tmp_path / "nokey").exists()
    _, got = restored_fingerprint(
        make_cluster, repo, pg_bin, tmp_path, key_file=str(key), target=RecoveryTarget(immediate=True)
    )
    assert got.diff(truth) == []


def test_encrypted_incremental_chain_is_streamed_without_staging_and_restores(primary, repo, pg_bin, make_cluster,
                                                                              tmp_path):  # fmt: skip
    from backup_tools.security.keys import generate_key_file_text

    needs_incremental(pg_bin)
    key = tmp_path / "backup.key"
    key.write_text(generate_key_file_text())
    full = physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, key_file=str(key), log=quiet).record
    primary.safe_sql("DELETE FROM items WHERE id % 2 = 0")
    primary.safe_sql("CREATE TABLE later AS SELECT g AS id FROM generate_series(1, 30) g")
    inc = physical_backup(dsn=primary.dsn, repo=repo, kind="incremental", pg=pg_bin, key_file=str(key),
                          log=quiet).record  # fmt: skip
    with primary.connect() as conn:
        truth = fingerprint(conn)
    assert full.options["streamed"] and inc.options["streamed"] and inc.parent == full.id
    assert {f.name for f in inc.files} == {"backup_manifest", "base.tar.zst"}  # WAL inside base.tar
    assert [p for p in (repo.root / "staging").rglob("*") if p.is_file()] == []
    assert inc.size < full.size / 2
    from backup_tools.lifecycle.verify import verify_backup

    for done in (full, inc):  # `verify` reads the streamed layout (WAL inside base.tar) too
        checked = verify_backup(repo, done, pg=pg_bin, key_file=str(key), log=quiet)
        assert checked.ok, checked.problems
    primary.safe_sql("INSERT INTO items VALUES (100000, 'after the last backup')")
    result, got = restored_fingerprint(
        make_cluster, repo, pg_bin, tmp_path, key_file=str(key), target=RecoveryTarget(immediate=True)
    )
    assert result.chain == (full.id, inc.id)
    assert got.diff(truth) == []


def test_encrypted_backup_of_postgres_15_is_streamed_and_restores(pg15_primary, make_cluster, repo, tmp_path):
    from backup_tools.security.keys import generate_key_file_text

    old, pg15 = pg15_primary, pg15_primary.pg
    old.safe_sql("CREATE TABLE items AS SELECT g AS id, 'row ' || g AS note FROM generate_series(1, 500) g")
    key = tmp_path / "backup.key"
    key.write_text(generate_key_file_text())
    done = physical_backup(dsn=old.dsn, repo=repo, kind="full", pg=pg15, key_file=str(key), log=quiet).record
    with old.connect() as conn:
        truth = fingerprint(conn)
    assert done.options["streamed"] and done.pg_version.startswith("15")
    from backup_tools.lifecycle.verify import verify_backup

    checked = verify_backup(repo, done, pg=pg15, key_file=str(key), log=quiet)  # tars scanned, WAL inside base.tar
    assert checked.ok and "backup_manifest ok" in checked.checked, checked.problems
    _, got = restored_fingerprint(make_cluster, repo, pg15, tmp_path, key_file=str(key),
                                  target=RecoveryTarget(immediate=True))  # fmt: skip
    assert got.diff(truth) == []


def test_staging_left_by_a_killed_backup_is_removed_by_the_next_one(primary, repo, pg_bin):
    leftover = repo.root / "staging" / "20260101T000000Z-full-dead" / "data"
    leftover.mkdir(parents=True)
    (leftover / "base.tar").write_bytes(b"\0" * 4096)  # what pg_basebackup had written when the backup was killed
    done = physical_backup(dsn=primary.dsn, repo=repo, kind="full", pg=pg_bin, log=quiet).record
    assert done.is_good
    assert list((repo.root / "staging").iterdir()) == []
