"""`backup-tools backup`: take a full or incremental physical backup into a repository, catalogued.

Order of writes: repository lock; identity check (system identifier and major version); catalog STARTED;
pg_basebackup into staging (base.tar stored and checksummed per file as it is written); the backup_manifest
check (backup/manifest.py; pg_verifybackup too where it reads the format); objects stored (checksummed); catalog DONE written last
(atomically, by Repository.write_catalog). Any failure writes FAILED and re-raises. An encrypted backup, and
any tar-format backup to S3, stages no data: pg_basebackup's one tar is piped into the repository and checked as
it passes (streamed.py).
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_tools.backup.basebackup import (
    MANIFEST,
    MANIFEST_CHECKSUMS,
    Format,
    after_backup_facts,
    check_incremental,
    read_manifest,
    run_basebackup,
    server_state,
    verify_dir,
)
from backup_tools.backup.manifest import TarScan
from backup_tools.backup.staging import clear_stale, new_staging, staging_root
from backup_tools.backup.streamed import take_streamed
from backup_tools.backup.tailread import Background, GrowingFile
from backup_tools.backup.tar import TarPipe
from backup_tools.catalog import BACKUPS, CATALOG_NAME, BackupRecord, FileEntry, Kind, new_backup_id
from backup_tools.errors import BackupNotFound, BackupToolsError, UsageError, VersionMismatch
from backup_tools.pg.bin import PgBin
from backup_tools.repo.base import Repository
from backup_tools.repo.compress import SUFFIXES, check_codec
from backup_tools.repo.objects import Sealing, copy_to_file, new_sealing, open_object, open_sealing, store_object
from backup_tools.repo.policy import enforce, read_identity, write_identity
from backup_tools.streams import CHUNK, sha256_of

logger = logging.getLogger(__name__)

PHYSICAL = ("full", "incremental")
Log = Callable[[str], Any]


@dataclass(frozen=True)
class BackupResult:
    """A finished backup: its catalog record and how long it took."""

    record: BackupRecord
    seconds: float


def check_identity(repo: Repository, *, system_identifier: str, major: int) -> dict[str, Any] | None:
    """Refuse a backup from another database system or major version; claim an unclaimed repository.

    Returns identity.json as it stands afterwards (None only if it could not be re-read).
    """
    owner = read_identity(repo)
    if owner is not None and owner.get("system_identifier"):
        if owner.get("system_identifier") != system_identifier:
            raise UsageError(
                f"{repo.url} holds backups of database system {owner.get('system_identifier')}, this server is "
                f"system {system_identifier}; use a separate repository per cluster"
            )
        if int(owner.get("pg_major", major)) != major:
            raise VersionMismatch(
                f"{repo.url} holds PostgreSQL {owner.get('pg_major')} backups, this server runs {major}; "
                "after a major upgrade start a new repository (keep the old one for its retention period)"
            )
        return owner
    claim = {"system_identifier": system_identifier, "pg_major": major, "created_at": datetime.now(UTC).isoformat()}
    doc = (owner or {}) | claim  # wal-push may have recorded the encryption policy before the first backup
    write_identity(repo, doc, replace=owner is not None)
    return doc


def latest_physical(repo: Repository) -> BackupRecord:
    """The newest good physical backup (the parent of a new incremental)."""
    good = [r for r in repo.list_backups() if r.is_good and r.kind in PHYSICAL]
    if not good:
        raise BackupNotFound(
            f"no finished full backup in {repo.url} to base an incremental on; take a --kind full backup first"
        )
    return good[-1]


def physical_backup(
    *,
    dsn: str,
    repo: Repository,
    kind: Kind,
    pg: PgBin,
    fmt: Format = "tar",
    compression: str = "zstd",
    key_file: str | None = None,
    staging_dir: Path | None = None,
    label: str | None = None,
    log: Log = logger.info,
) -> BackupResult:
    """Take a full or incremental physical backup under the repository lock; return its DONE record."""
    if kind not in PHYSICAL:
        raise UsageError(f"--kind {kind} is not a physical backup; use full or incremental")
    check_codec(compression)
    began = datetime.now(UTC)
    state = server_state(dsn, pg)
    if kind == "incremental":
        check_incremental(state)
    with repo.lock():
        identity = check_identity(repo, system_identifier=state.system_identifier, major=state.major)
        root = staging_root(repo, staging_dir)
        clear_stale(root, locked=staging_dir is None and repo.local_path("staging") is not None, log=log,
                    staging_dir=staging_dir)  # fmt: skip
        parent = latest_physical(repo) if kind == "incremental" else None
        sealing = new_sealing(key_file)
        enforce(repo, sealing.meta if sealing else None, what=f"take a {kind} backup", identity=identity)
        record = BackupRecord(
            id=new_backup_id(began, kind), kind=kind, status="STARTED", start_time=began,
            parent=parent.id if parent else None, pg_version=state.version,
            system_identifier=state.system_identifier, encryption=sealing.meta if sealing else None,
            options={"format": fmt, "compression": compression, "wal_segment_size": state.wal_segment_size,
                     "server_version_num": state.version_num, **({"label": label} if label else {})},
        )  # fmt: skip
        repo.write_catalog(record)
        log(
            f"### Backup {record.id} ({kind}{f' on {parent.id}' if parent else ''}) of system {state.system_identifier}"
        )
        staging = new_staging(root, record.id, repo_url=repo.url)
        try:
            record = _take(record, dsn=dsn, repo=repo, pg=pg, state=state, parent=parent, sealing=sealing,
                           key_file=key_file, staging=staging, log=log)  # fmt: skip
        except BaseException as e:
            note = _mark_failed(repo, record, e)
            if isinstance(e, BackupToolsError):
                raise type(e)(f"backup {record.id} FAILED: {e}{note}") from e
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        repo.write_catalog(record)  # DONE: written last
    seconds = (datetime.now(UTC) - began).total_seconds()
    log(
        f"### Backup {record.id} DONE: {record.size} bytes stored, {record.start_lsn}..{record.stop_lsn}, {seconds:.1f} s"
    )
    return BackupResult(record, seconds)


def _mark_failed(repo: Repository, record: BackupRecord, error: BaseException) -> str:
    """Remove a failed backup's objects and mark it FAILED, with short deadlines; "" or why it could not be marked."""
    failed = record.with_changes(status="FAILED", stop_time=datetime.now(UTC))
    failed.options["error"] = str(error)[:500]
    with repo.cleanup():
        _remove_objects(repo, record.id)
        try:
            repo.write_catalog(failed)
        except BackupToolsError as e:
            return (f"; could not mark it FAILED either ({e}): its catalog still says STARTED, which never lists as "
                    "good (`check` reports it as stuck, `prune` removes it)")  # fmt: skip
    return ""


def _remove_objects(repo: Repository, backup_id: str) -> None:
    """Delete what a failed backup stored (base.tar is stored while pg_basebackup runs); keep its catalog."""
    try:
        for key in repo.list(f"{BACKUPS}/{backup_id}/"):
            if not key.endswith("/" + CATALOG_NAME):
                repo.delete(key)
    except BackupToolsError:
        pass  # the FAILED catalog still marks them as not restorable; prune removes them


def _take(record: BackupRecord, *, dsn: str, repo: Repository, pg: PgBin, state: Any, parent: BackupRecord | None,
          sealing: Sealing | None, key_file: str | None, staging: Path, log: Log) -> BackupRecord:  # fmt: skip
    fmt, codec = record.options["format"], record.options["compression"]
    parent_manifest = None
    if parent is not None:
        parent_manifest = staging / "parent_manifest"
        entry = next((f for f in parent.files if f.name == MANIFEST), None)
        if entry is None:
            raise BackupNotFound(f"parent backup {parent.id} has no {MANIFEST}; take a --kind full backup")
        psealing = open_sealing(parent.encryption, key_file=key_file)
        copy_to_file(_open_entry(repo, parent, entry, psealing), parent_manifest)
    if sealing is not None or (fmt == "tar" and repo.local_path(f"{BACKUPS}/{record.id}") is None):
        # encrypted, or bound for S3: no data is staged (no plaintext on disk, no local disk the size of the
        # database); the one tar is piped and checked (backup/streamed.py)
        files, stop_time, facts = take_streamed(record, dsn=dsn, repo=repo, pg=pg, state=state, sealing=sealing,
                                                parent_manifest=parent_manifest, staging=staging, log=log)  # fmt: skip
        return _done(record, staging / MANIFEST, state, files, stop_time=stop_time,
                     options={**record.options, **facts, "streamed": True})  # fmt: skip
    data = staging / "data"
    linking = repo.local_path(f"{BACKUPS}/{record.id}") is not None and codec == "none" and sealing is None
    log(f"### Running pg_basebackup ({fmt} format) into {data}")
    # Durability contract: an object is fsynced where it lands in the repository (put_stream: file and directory;
    # a hard link: _link_into fsyncs the inode and the directory) before the DONE catalog is written, and that
    # catalog is fsynced (file and directory) last. The staging copy itself never needs to survive a crash, so
    # pg_basebackup runs with --no-sync (its own fsyncs of every file and directory would repeat ours).
    writer = Background(run_basebackup, dsn=dsn, pg=pg, dest=data, fmt=fmt, server_version_num=state.version_num,
                        incremental_manifest=parent_manifest, label=record.id, sync=False)  # fmt: skip
    early: dict[str, FileEntry | str] = {}
    scans = {"base.tar": TarScan(MANIFEST_CHECKSUMS)} if fmt == "tar" else None
    if scans:  # base.tar is hashed (linking) or stored while pg_basebackup still writes it, and checksummed per file
        try:
            early["base.tar"] = _while_written(repo, record.id, data / "base.tar", writer, codec=codec,
                                               sealing=sealing, linking=linking, tap=scans["base.tar"].feed)  # fmt: skip
        except BaseException as e:
            writer.result()  # pg_basebackup's own error explains more, if it failed
            raise e
    writer.result()
    stop_time = datetime.now(UTC)
    facts = after_backup_facts(dsn, pg)
    log("### Verifying the staged backup against its backup_manifest")
    verify_dir(data, pg=pg, fmt=fmt, scans=scans, segment_size=state.wal_segment_size)
    files = []
    sources: list[tuple[str, Path | TarPipe]] = [(MANIFEST, data / MANIFEST)]
    if fmt == "tar":
        sources += [(p.name, p) for p in sorted(data.glob("*.tar"))]
    else:
        sources.append(("base.tar", TarPipe(data)))
    for name, src in sources:
        if isinstance(done := early.get(name), FileEntry):
            files.append(done)
            continue
        object_codec = "none" if name == MANIFEST else codec
        object_name = name + SUFFIXES[object_codec]
        key = f"{BACKUPS}/{record.id}/{object_name}"
        log(f"### Storing {key}")
        try:
            stored = store_object(repo, key, src, codec=object_codec, sealing=sealing, scope=record.id,  # type: ignore[arg-type]
                                  sha256=done)  # fmt: skip
        finally:
            if isinstance(src, TarPipe):
                src.close()
        files.append(FileEntry(object_name, stored.size, stored.sha256, object_codec, stored.plain_size,
                               stored.plain_sha256))  # fmt: skip
    return _done(record, data / MANIFEST, state, files, stop_time=stop_time, options={**record.options, **facts})


def _done(record: BackupRecord, manifest_path: Path, state: Any, files: list[FileEntry], *, stop_time: datetime,
          options: dict[str, Any]) -> BackupRecord:  # fmt: skip
    """The DONE record from the backup's manifest, refused when it names another system (a failover meanwhile)."""
    manifest = read_manifest(manifest_path)
    if manifest.system_identifier and manifest.system_identifier != state.system_identifier:
        raise BackupToolsError(
            f"the server's system identifier changed during the backup (manifest {manifest.system_identifier}, "
            f"server {state.system_identifier}: a failover?); take it again"
        )
    return record.with_changes(
        status="DONE", stop_time=stop_time, start_lsn=manifest.start_lsn, stop_lsn=manifest.stop_lsn,
        timeline=manifest.timeline, files=tuple(files), options=options,
    )  # fmt: skip


def _while_written(repo: Repository, backup_id: str, path: Path, writer: Background, *, codec: str,
                   sealing: Sealing | None, linking: bool, tap: Callable[[memoryview], Any]) -> FileEntry | str:  # fmt: skip
    """Follow a tar pg_basebackup is writing: return its sha256 (to hard-link it later) or the stored object."""
    with GrowingFile(path, writer, tap=tap) as growing:
        if linking:
            return sha256_of(growing)[1]
        name = path.name + SUFFIXES[codec]
        stored = store_object(repo, f"{BACKUPS}/{backup_id}/{name}", io.BufferedReader(growing, CHUNK), codec=codec,
                              sealing=sealing, scope=backup_id)  # type: ignore[arg-type]  # fmt: skip
    return FileEntry(name, stored.size, stored.sha256, codec, stored.plain_size, stored.plain_sha256)


def _open_entry(repo: Repository, record: BackupRecord, entry: FileEntry, sealing: Sealing | None):
    return open_object(
        repo, f"{BACKUPS}/{record.id}/{entry.name}", codec=entry.codec, sealing=sealing, scope=record.id,
        size=entry.size, sha256=entry.sha256, plain_size=entry.plain_size, plain_sha256=entry.plain_sha256,
    )  # fmt: skip
