"""`backup-tools copy`: primary-region repo -> DR-region repo (and file:// -> s3:// for 3-2-1), verified at the destination."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from backup_tools.catalog import BackupRecord, FileEntry
from backup_tools.errors import BackupNotFound, IntegrityCheckFailed, RepositoryError, UsageError
from backup_tools.lifecycle.offsite import STATUS_KEY, copy_backups, wal_to_copy
from backup_tools.repo.base import FileRepository, ObjectInfo, Repository
from backup_tools.repo.objects import store_object
from backup_tools.repo.s3.repository import S3Options, S3Repository
from fixtures.faultproxy import closed_port_url, fault_proxy
from fixtures.s3 import S3Service

SEG = "00000001000000000000000"  # + one hex digit: segments 1..9 of timeline 1


def quiet(_: str) -> None:
    """Swallow progress lines."""


def body(name: str, size: int = 3000) -> bytes:
    """Deterministic bytes for an object."""
    block = hashlib.sha256(name.encode()).digest() * 64
    return (block * (size // len(block) + 1))[:size]


def fake_backup(repo: Repository, backup_id: str, *, kind: str = "full", parent: str | None = None,
                start_seg: int = 2, stopped: datetime | None = None) -> BackupRecord:  # fmt: skip
    """A finished backup record with three objects (no PostgreSQL needed): copy does not look inside them."""
    files = []
    for name in ("backup_manifest", "base.tar.zst", "pg_wal.tar.zst"):
        info = repo.put_bytes(f"backups/{backup_id}/{name}", body(backup_id + name))
        files.append(FileEntry(name, info.size, info.sha256, "zstd"))
    stop = stopped or datetime.now(UTC) - timedelta(minutes=5)
    record = BackupRecord(
        id=backup_id, kind=kind, status="DONE", start_time=stop - timedelta(minutes=1), stop_time=stop, parent=parent,
        start_lsn=f"0/{start_seg:X}000028", stop_lsn=f"0/{start_seg:X}000100", timeline=1, files=tuple(files),
    )  # fmt: skip
    repo.write_catalog(record)
    return record


def fake_wal(repo: Repository, tmp_path: Path, seg: int, *, pushed: datetime | None = None) -> str:
    """Archive a small self-describing WAL object like wal-push does."""
    name = f"{SEG}{seg:X}"
    path = tmp_path / name
    path.write_bytes(body(name, 2048))
    envelope = {"name": name, "pushed_at": (pushed or datetime.now(UTC)).isoformat()}
    store_object(repo, f"wal/{name}", path, codec="none", scope="wal", envelope=envelope)
    return name


@pytest.fixture
def src(tmp_path: Path) -> FileRepository:
    """A primary repository on disk."""
    (tmp_path / "src").mkdir()
    return FileRepository(tmp_path / "src")


@pytest.fixture
def dst(tmp_path: Path) -> FileRepository:
    """An empty second repository on disk."""
    (tmp_path / "dst").mkdir()
    return FileRepository(tmp_path / "dst")


def test_copy_lists_the_backup_last_with_its_lag_and_verified_objects(src, dst, tmp_path):
    record = fake_backup(src, "b1", start_seg=2)
    fake_wal(src, tmp_path, 1)  # before the backup's start: not needed
    wal = [fake_wal(src, tmp_path, s, pushed=datetime.now(UTC) - timedelta(seconds=90)) for s in (2, 3, 4)]
    result = copy_backups(src, dst, backup="b1", log=quiet)
    assert result.backups == ("b1",) and result.copied == 3 and result.wal_copied == 3
    assert sorted(k for k in dst.list("wal/")) == [f"wal/{n}" for n in wal]
    for entry in record.files:
        assert dst.get_bytes(f"backups/b1/{entry.name}", sha256=entry.sha256) == body("b1" + entry.name)
    copied = dst.read_catalog("b1")
    assert copied.is_good and copied.files == record.files
    assert copied.options["copy"]["source"] == src.url and copied.options["copy"]["newest_wal"] == wal[-1]
    assert 300 <= result.backup_lag_seconds["b1"] < 400  # stop time 5 min ago -> copy done now
    assert 90 <= result.wal_lag_seconds < 150 and result.newest_wal == wal[-1]
    assert json.loads(dst.get_bytes(STATUS_KEY))["newest_wal"] == wal[-1]


def test_second_copy_skips_everything_and_keeps_the_first_lag(src, dst, tmp_path):
    fake_backup(src, "b1")
    fake_wal(src, tmp_path, 2)
    first = copy_backups(src, dst, backup="latest", log=quiet)
    catalog = dst.get_bytes("backups/b1/catalog.json")
    again = copy_backups(src, dst, backup="all", log=quiet)
    assert (again.copied, again.wal_copied, again.repaired) == (0, 0, 0)
    assert again.skipped == first.copied and again.wal_skipped == 1
    assert dst.get_bytes("backups/b1/catalog.json") == catalog


def test_incremental_brings_its_parent_and_wal_from_the_oldest_start(src, dst, tmp_path):
    fake_backup(src, "b1-full", start_seg=3, stopped=datetime.now(UTC) - timedelta(hours=2))
    fake_backup(src, "b2-inc", kind="incremental", parent="b1-full", start_seg=6)
    names = [fake_wal(src, tmp_path, s) for s in range(1, 9)]
    result = copy_backups(src, dst, backup="b2-inc", log=quiet)
    assert result.backups == ("b1-full", "b2-inc")
    assert [r.id for r in dst.list_backups()] == ["b1-full", "b2-inc"]
    assert [k.rsplit("/", 1)[1] for k in dst.list("wal/")] == names[2:]  # from segment 3 on
    assert wal_to_copy(src, [src.read_catalog("b1-full")], all_wal=True) == names


def test_interrupted_copy_lists_nothing_and_resumes(src, dst, tmp_path):
    fake_backup(src, "b1")
    fake_wal(src, tmp_path, 2)
    seen: list[str] = []

    def die_on_second_object(line: str) -> None:
        seen.append(line)
        if sum("Copying backups/" in s for s in seen) == 2:
            raise KeyboardInterrupt  # stands for a kill mid-copy

    with pytest.raises(KeyboardInterrupt):
        copy_backups(src, dst, backup="b1", log=die_on_second_object)
    assert dst.list_backups() == []  # half-copied: not listed as good
    assert len(dst.list("backups/")) == 1
    result = copy_backups(src, dst, backup="b1", log=quiet)
    assert (result.skipped, result.copied) == (1, 2) and dst.read_catalog("b1").is_good


def test_bit_flip_at_the_destination_is_found_and_repaired(src, dst, tmp_path):
    record = fake_backup(src, "b1")
    fake_wal(src, tmp_path, 2)
    copy_backups(src, dst, backup="b1", log=quiet)
    path = dst.root / "backups/b1/base.tar.zst"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    entry = next(f for f in record.files if f.name == "base.tar.zst")
    with pytest.raises(IntegrityCheckFailed, match="base.tar.zst"):
        dst.get_bytes("backups/b1/base.tar.zst", sha256=entry.sha256)
    lines: list[str] = []
    result = copy_backups(src, dst, backup="b1", log=lines.append)
    assert result.repaired == 1 and any("base.tar.zst differs" in line for line in lines)
    assert dst.get_bytes("backups/b1/base.tar.zst", sha256=entry.sha256) == body("b1base.tar.zst")


class FlippingRepository(FileRepository):
    """Storage that corrupts what it stores (a broken disk or gateway): the read-back must catch it."""

    def put_stream(self, key, src, *, overwrite=False) -> ObjectInfo:
        info = super().put_stream(key, src, overwrite=overwrite)
        if key.startswith("backups/") and not key.endswith("catalog.json"):
            path = self._path(key)
            path.write_bytes(bytes([path.read_bytes()[0] ^ 0xFF]) + path.read_bytes()[1:])
        return info


def test_checksum_mismatch_at_the_destination_fails_and_lists_nothing(src, tmp_path):
    fake_backup(src, "b1")
    (tmp_path / "bad").mkdir()
    bad = FlippingRepository(tmp_path / "bad")
    with pytest.raises(
        IntegrityCheckFailed, match=r"backups/b1/backup_manifest at .* \(checksum mismatch at the destination\)"
    ):
        copy_backups(src, bad, backup="b1", log=quiet)
    assert bad.list_backups() == []


def test_source_missing_an_object_is_a_clear_error(src, dst):
    fake_backup(src, "b1")
    (src.root / "backups/b1/pg_wal.tar.zst").unlink()
    with pytest.raises(RepositoryError, match=r"pg_wal.tar.zst is missing from the source .*backup-tools verify"):
        copy_backups(src, dst, backup="b1", log=quiet)
    assert dst.list_backups() == []


def test_bad_choices_are_usage_errors_and_missing_backups_operational_ones(src, dst):
    with pytest.raises(BackupNotFound, match="no finished backup"):
        copy_backups(src, dst, backup="latest", log=quiet)
    fake_backup(src, "b1")
    src.write_catalog(src.read_catalog("b1").with_changes(status="FAILED"))
    with pytest.raises(BackupNotFound, match="FAILED, not DONE"):
        copy_backups(src, dst, backup="b1", log=quiet)
    with pytest.raises(UsageError, match="same repository"):
        copy_backups(src, FileRepository(src.root), backup="all", log=quiet)


def test_other_system_at_the_destination_is_refused(src, dst):
    fake_backup(src, "b1")
    src.put_bytes("identity.json", b'{"system_identifier": "1", "pg_major": 18}')
    dst.put_bytes("identity.json", b'{"system_identifier": "2", "pg_major": 18}')
    with pytest.raises(UsageError, match="system 2.*system 1"):
        copy_backups(src, dst, backup="b1", log=quiet)


# --- real S3 (moto over HTTP): two regions ---------------------------------------------------------------


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run backup-tools in a subprocess with the S3 environment."""
    return subprocess.run(
        [sys.executable, "-m", "backup_tools", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **env},
    )  # fmt: skip


@pytest.mark.integration
def test_cli_copies_between_regions_and_exit_codes(s3: S3Service, s3_prefix: str, tmp_path: Path):
    primary, dr = s3.repository(s3.primary_region, s3_prefix), s3.repository(s3.dr_region, s3_prefix)
    fake_backup(primary, "b1")
    fake_wal(primary, tmp_path, 2)
    src_url, dst_url = s3.repo_url(s3.primary_region, s3_prefix), s3.repo_url(s3.dr_region, s3_prefix)
    done = cli("copy", "--repo", src_url, "--to-repo", dst_url, "--backup", "all", "--json", env=s3.env())
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["backups"] == ["b1"] and doc["copied"] == 3 and doc["wal_copied"] == 1
    assert [r.id for r in dr.list_backups()] == ["b1"]
    # the DR bucket really holds the objects (no bucket replication involved)
    keys = s3.client(s3.dr_region).list_objects_v2(Bucket=s3.dr_bucket, Prefix=s3_prefix)["Contents"]
    assert {k["Key"].removeprefix(s3_prefix + "/") for k in keys} >= {"backups/b1/base.tar.zst", f"wal/{SEG}2"}
    bad = cli("copy", "--repo", src_url, "--to-repo", dst_url, "--backup", "nope", env=s3.env())
    assert bad.returncode == 1 and "no backup 'nope'" in bad.stderr  # a missing backup: operational, exit 1
    down = cli("copy", "--repo", src_url, "--to-repo", dst_url, env=s3.env() | {"AWS_ENDPOINT_URL": closed_port_url()})
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1
    assert "could not connect" in down.stderr


@pytest.mark.integration
def test_unreachable_destination_is_a_clear_error(s3: S3Service, s3_prefix: str):
    primary = s3.repository(s3.primary_region, s3_prefix)
    fake_backup(primary, "b1")
    dead = S3Repository(s3.dr_bucket, s3_prefix, S3Options(endpoint_url=closed_port_url(), region=s3.dr_region,
                                                           attempts=1, credentials=("k", "s")))  # fmt: skip
    with pytest.raises(RepositoryError, match=r"destination unreachable: .*could not connect"):
        copy_backups(primary, dead, backup="b1", log=quiet)


@pytest.mark.integration
def test_killed_cli_copy_resumes(s3: S3Service, s3_prefix: str, tmp_path: Path):
    primary, dr = s3.repository(s3.primary_region, s3_prefix), s3.repository(s3.dr_region, s3_prefix)
    fake_backup(primary, "b1")
    for seg in range(2, 6):
        fake_wal(primary, tmp_path, seg)
    src_url, dst_url = s3.repo_url(s3.primary_region, s3_prefix), s3.repo_url(s3.dr_region, s3_prefix)
    with fault_proxy(s3.endpoint) as proxy:
        proxy.hang(1000, seconds=0.7, method="PUT", path=f"/{s3.dr_bucket}/{s3_prefix}/backups/")
        proc = subprocess.Popen(
            [sys.executable, "-m", "backup_tools", "copy", "--repo", src_url, "--to-repo", dst_url],
            env={**os.environ, **s3.env(), "AWS_ENDPOINT_URL": proxy.url}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not [k for k in dr.list("backups/") if "catalog" not in k] and time.monotonic() < deadline:
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    stored = [k for k in dr.list("backups/")]
    assert 1 <= len(stored) < 3 and dr.list_backups() == []  # objects landed, nothing listed
    done = cli("copy", "--repo", src_url, "--to-repo", dst_url, "--json", env=s3.env())
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["skipped"] >= 1 and doc["skipped"] + doc["copied"] == 3 and doc["wal_copied"] == 4
    assert dr.read_catalog("b1").is_good


# --- real backups: restore from the DR copy alone -----------------------------------------------------------


def _restore_and_fingerprint(repo: Repository, pg_bin, tmp_path: Path, *, key_file: str | None = None):
    from backup_tools.pg.checks import fingerprint
    from backup_tools.pg.ports import free_port
    from backup_tools.restore.physical import RestoreOptions, restore, start_restored, stop_restored

    data, sock = tmp_path / "restored", tmp_path / "restored-sock"
    sock.mkdir()
    restore(repo, to=data, pg=pg_bin, options=RestoreOptions(key_file=key_file), log=quiet)
    port = free_port()
    try:
        start_restored(data, pg=pg_bin, port=port, socket_dir=sock, log=quiet)
        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            return fingerprint(conn)
    finally:
        stop_restored(data, pg=pg_bin)


def _wipe(repo: Repository) -> None:
    for key in repo.list(""):
        repo.delete(key)


@pytest.mark.integration
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted-zstd"])
def test_backup_copied_to_dr_restores_from_dr_alone(
    s3: S3Service, s3_prefix: str, make_cluster, pg_bin, tmp_path: Path, monkeypatch, encrypted: bool
):
    from backup_tools.backup.physical import physical_backup
    from backup_tools.lifecycle.verify import verify_backup
    from backup_tools.pg.checks import fingerprint
    from backup_tools.security.keys import generate_key_file_text

    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)  # wal-push / wal-fetch subprocesses reach the moto server
    key_file = None
    if encrypted:  # s3 primary region -> s3 DR region
        key_file = str(tmp_path / "backup.key")
        Path(key_file).write_text(generate_key_file_text())
        primary = s3.repository(s3.primary_region, s3_prefix)
        monkeypatch.setenv("PGDRILL_KEY_FILE", key_file)
    else:  # 3-2-1: file:// on local disk -> s3 DR region
        (tmp_path / "local-repo").mkdir()
        primary = FileRepository(tmp_path / "local-repo")
    dr = s3.repository(s3.dr_region, s3_prefix)
    # Given a primary archiving WAL into the primary repository, with a full backup there
    cluster = make_cluster("primary")
    cluster.init(has_archiving=True, archive_url=primary.url)
    cluster.start()
    cluster.safe_sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    cluster.safe_sql("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 2000) g")
    record = physical_backup(dsn=cluster.dsn, repo=primary, kind="full", pg=pg_bin, key_file=key_file,
                             compression="zstd" if encrypted else "none", log=quiet).record  # fmt: skip
    cluster.safe_sql("INSERT INTO items SELECT g, 'after the backup' FROM generate_series(2001, 2100) g")
    with cluster.connect() as conn:
        truth = fingerprint(conn)
    cluster.archive_current_wal()
    assert (record.encryption is not None) == encrypted
    # When the backup and its WAL are copied to the DR region and the primary repository is lost
    result = copy_backups(primary, dr, backup=record.id, log=quiet)
    assert result.backups == (record.id,) and result.wal_copied >= 2 and result.wal_lag_seconds is not None
    cluster.stop()
    _wipe(primary)
    assert primary.list("") == []
    # Then the DR bucket alone restores the cluster to the newest archived WAL
    got = _restore_and_fingerprint(dr, pg_bin, tmp_path, key_file=key_file)
    assert got.diff(truth) == [] and got.tables["items"].rows == 2100
    # And a bit flipped in the DR copy is named by verify
    entry = next(f for f in record.files if f.name.startswith("base.tar"))
    client, full = s3.client(s3.dr_region), f"{s3_prefix}/backups/{record.id}/{entry.name}"
    data = bytearray(client.get_object(Bucket=s3.dr_bucket, Key=full)["Body"].read())
    data[len(data) // 2] ^= 0x10
    client.put_object(Bucket=s3.dr_bucket, Key=full, Body=bytes(data))
    verdict = verify_backup(dr, dr.read_catalog(record.id), pg=pg_bin, key_file=key_file, log=quiet)
    assert not verdict.ok and any(entry.name in p for p in verdict.problems)
