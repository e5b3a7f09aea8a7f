"""A physical backup that stages no data (encrypted, or bound for S3): pg_basebackup's tar is piped into the repository.

`pg_basebackup -D - -F t -X fetch` writes one tar to stdout (the backup's WAL under pg_wal/, backup_manifest
injected as its last member). It goes through store_object (compress -> encrypt -> upload) while TarScan
(backup/manifest.py) checksums every member and keeps the manifest; check_tars and check_wal_members then do
what pg_verifybackup does. Only the manifest (file names, sizes, checksums: no row data) is written to the
private staging directory, for those checks and the DONE record. A temporary replication slot held by a psql
session (pg/slots.py) keeps the WAL that -X fetch reads at the end.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from backup_tools.backup.basebackup import MANIFEST, MANIFEST_CHECKSUMS, after_backup_facts, stream_basebackup
from backup_tools.backup.manifest import TarScan, check_tars, check_wal_members
from backup_tools.catalog import BACKUPS, BackupRecord, FileEntry
from backup_tools.errors import IntegrityCheckFailed
from backup_tools.pg.bin import PgBin
from backup_tools.pg.slots import wal_held
from backup_tools.repo.base import Repository
from backup_tools.repo.compress import SUFFIXES
from backup_tools.repo.objects import Sealing, StoredObject, store_object
from backup_tools.streams import CHUNK

logger = logging.getLogger(__name__)
Log = Callable[[str], Any]


class Tapped(io.RawIOBase):
    """A reader that hands every byte it passes on to a tap as well (TarScan.feed)."""

    def __init__(self, src: IO[bytes], tap: Callable[[memoryview], Any]):
        self._src, self._tap = src, tap

    def readable(self) -> bool:
        """Always: this is a reader."""
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        """Read from the source into buffer and show the tap what was read."""
        n = self._src.readinto(buffer) or 0  # type: ignore[attr-defined]
        if n:
            self._tap(memoryview(buffer)[:n])
        return n


def take_streamed(record: BackupRecord, *, dsn: str, repo: Repository, pg: PgBin, state: Any,
                  parent_manifest: Path | None, sealing: Sealing | None, staging: Path,
                  log: Log = logger.info) -> tuple[list[FileEntry], datetime, dict[str, str]]:  # fmt: skip
    """Store the backup's one tar and its manifest, checked; return the file entries, stop time and facts."""
    codec = record.options["compression"]
    name = "base.tar" + SUFFIXES[codec]
    key = f"{BACKUPS}/{record.id}/{name}"
    scan = TarScan(MANIFEST_CHECKSUMS, keep=MANIFEST)
    why = "encrypted" if sealing is not None else "to a remote repository"
    log(f"### Streaming pg_basebackup (one tar, WAL fetched into it) into {key}, {why}: no data is staged")

    def store(out: IO[bytes]) -> StoredObject:
        reader = io.BufferedReader(Tapped(out, scan.feed), CHUNK)
        return store_object(repo, key, reader, codec=codec, sealing=sealing, scope=record.id)  # type: ignore[arg-type]

    with wal_held(dsn, pg, log=log):
        stored = stream_basebackup(dsn=dsn, pg=pg, consumer=store, server_version_num=state.version_num,
                                   incremental_manifest=parent_manifest, label=record.id)  # fmt: skip
    stop_time = datetime.now(UTC)
    facts = after_backup_facts(dsn, pg)
    if scan.kept is None:
        raise IntegrityCheckFailed("the backup stream holds no backup_manifest (truncated?); take the backup again")
    manifest = staging / MANIFEST
    manifest.write_bytes(scan.kept)
    log("### Checking the streamed backup against its backup_manifest (sizes, checksums, WAL segments)")
    check_tars(manifest, {"base.tar": scan})
    check_wal_members(scan.members, manifest, segment_size=state.wal_segment_size, where="base.tar")
    kept = store_object(repo, f"{BACKUPS}/{record.id}/{MANIFEST}", manifest, sealing=sealing, scope=record.id)
    files = [FileEntry(MANIFEST, kept.size, kept.sha256, "none", kept.plain_size, kept.plain_sha256),
             FileEntry(name, stored.size, stored.sha256, codec, stored.plain_size, stored.plain_sha256)]  # fmt: skip
    return files, stop_time, facts
