"""`backup-tools verify`: re-read backups against their checksums and restore-test them (`check` is monitor/checks.py)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from backup_tools.backup.basebackup import MANIFEST, verify_dir
from backup_tools.catalog import BACKUPS, BackupRecord
from backup_tools.errors import BackupToolsError, RecoveryError
from backup_tools.pg.bin import PgBin
from backup_tools.pg.checks import fingerprint_schemas, user_databases
from backup_tools.pg.conn import text_as_str
from backup_tools.pg.ports import free_port
from backup_tools.pg.schemadigest import digest_diff, schema_digest
from backup_tools.repo.base import Repository
from backup_tools.repo.objects import copy_to_file, open_object, open_sealing
from backup_tools.restore.pitr import RecoveryTarget

logger = logging.getLogger(__name__)

Log = Callable[[str], Any]


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of verifying one backup: problems found (empty when good) and what was checked."""

    backup_id: str
    problems: tuple[str, ...]
    checked: tuple[str, ...]
    fingerprints: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing was wrong."""
        return not self.problems


def verify_backup(
    repo: Repository,
    record: BackupRecord,
    *,
    pg: PgBin,
    key_file: str | None = None,
    restore_test: bool = False,
    log: Log = logger.info,
) -> VerifyResult:
    """Re-read every object (sha256, decryption, decompression), run pg_verifybackup, optionally restore-test."""
    problems: list[str] = []
    checked: list[str] = []
    fingerprints: dict[str, Any] = {}
    digests: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix=f"pgdrill-verify-{record.id}-"))
    try:
        if not record.is_good:
            problems.append(f"status is {record.status}, not DONE")
        sealing = open_sealing(record.encryption, key_file=key_file)
        for entry in record.files:
            key = f"{BACKUPS}/{record.id}/{entry.name}"
            log(f"### Checking {key}")
            try:
                stream = open_object(
                    repo, key, codec=entry.codec, sealing=sealing, scope=record.id, size=entry.size,
                    sha256=entry.sha256, plain_size=entry.plain_size, plain_sha256=entry.plain_sha256,
                )  # fmt: skip
                copy_to_file(stream, work / entry.name.removesuffix(".zst").removesuffix(".gz"))
                checked.append(f"{entry.name}: sha256 ok")
            except BackupToolsError as e:
                problems.append(str(e))
        if not problems and record.kind in ("full", "incremental") and (work / MANIFEST).exists():
            try:
                verify_dir(work, pg=pg, fmt="tar", segment_size=record.options.get("wal_segment_size"))
                checked.append("backup_manifest ok")
            except BackupToolsError as e:
                problems.append(str(e))
        shutil.rmtree(work, ignore_errors=True)
        if restore_test and not problems:
            fingerprints, digests = _restore_test(repo, record, pg=pg, key_file=key_file, problems=problems, log=log)
            if not problems:
                checked.append("restore test ok")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not problems:
        now = datetime.now(UTC)
        current = repo.read_catalog(record.id)
        changes: dict[str, Any] = {"verified_at": now}
        if fingerprints and "restore_test" not in record.fingerprints:
            changes["fingerprints"] = {**record.fingerprints, "restore_test": fingerprints,
                                       "restore_test_schema": digests}  # fmt: skip
        if restore_test:  # `check` tells a restore test (restored, started, data checked) from a checksum verify
            changes["options"] = {**current.options, "restore_tested_at": now.isoformat()}
        repo.write_catalog(current.with_changes(**changes))
    return VerifyResult(record.id, tuple(problems), tuple(checked), fingerprints)


def _restore_test(
    repo: Repository, record: BackupRecord, *, pg: PgBin, key_file: str | None, problems: list[str], log: Log
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore to the backup's end in a temp dir, start it, fingerprint every database, compare with the catalog.

    Returns the table fingerprints and the schema digests, per database.
    """
    from backup_tools.restore.physical import RestoreOptions, restore, start_restored, stop_restored

    base = Path(tempfile.mkdtemp(prefix=f"pgdrill-restoretest-{record.id}-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    target = RecoveryTarget(immediate=True)
    try:
        options = RestoreOptions(backup_id=record.id, target=target, key_file=key_file)
        restore(repo, to=data, pg=pg, options=options, log=log)
        (data / "pg_hba.conf").write_text("local all all trust\n")
        port = free_port()
        start_restored(data, pg=pg, port=port, socket_dir=sock, target=target, log=log)
        try:
            digests: dict[str, Any] = {}
            got = fingerprint_all(sock, port, user=record.options.get("superuser", "postgres"), digests=digests)
        except psycopg.Error as e:
            raise RecoveryError(f"could not read the restored copy: {e}") from e
        stop_restored(data, pg=pg)
        expected = record.fingerprints.get("restore_test")
        if expected is not None:  # tables the first test recorded (older versions recorded only public's)
            differ = sorted(db for db, tables in expected.items()
                            if {t: got.get(db, {}).get(t) for t in tables} != tables or db not in got)  # fmt: skip
            if differ:
                problems.append(f"restore test: fingerprints differ from the first restore test in {', '.join(differ)}")
        for db, digest in (record.fingerprints.get("restore_test_schema") or {}).items():
            lost = digest_diff(digests.get(db, {}), digest)
            if lost:
                problems.append(f"restore test: schema of {db} differs from the first restore test: {'; '.join(lost)}")
        return got, digests
    except BackupToolsError as e:
        problems.append(f"restore test failed: {e}")
        return {}, {}
    finally:
        stop_restored(data, pg=pg, mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


def fingerprint_all(socket_dir: Path, port: int, *, user: str, digests: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fingerprints of every user schema of every connectable non-template database (and their schema digests)."""
    conninfo = {"host": str(socket_dir), "port": port, "user": user, "connect_timeout": 10, "autocommit": True}
    with text_as_str(psycopg.connect(dbname="postgres", **conninfo)) as conn:
        names = user_databases(conn)
    out = {}
    for name in sorted(names):
        with text_as_str(psycopg.connect(dbname=name, **conninfo)) as conn:
            out[name] = fingerprint_schemas(conn).to_dict()
            if digests is not None:
                digests[name] = schema_digest(conn)
    return out
