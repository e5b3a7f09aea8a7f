"""Physical backups with pg_basebackup (plain or tar, full or incremental), pg_verifybackup, and extraction.

Staging: pg_basebackup writes into a staging directory (inside a file:// repository, so its files are
hard-linked into place without a second copy; elsewhere a temp directory), pg_verifybackup checks it
there (an encrypted backup stages nothing: stream_basebackup pipes one tar, see backup/streamed.py), and backup/physical.py stores each object through repo/objects.store_object. Tar format stores pg_basebackup's
base.tar (hashed or stored while pg_basebackup still writes it, see tailread.py) and pg_wal.tar; plain format is verified as a directory and stored as one base.tar streamed
from it. Restores stream each object (verified, decrypted, decompressed) into the native tar, two at a time.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from backup_tools.backup.manifest import (
    TarScan,
    check_tars,
    check_wal_members,
    check_wal_tar,
    manifest_algorithm,
    scan_file,
)
from backup_tools.backup.tar import untar
from backup_tools.catalog import BACKUPS, BackupRecord
from backup_tools.errors import ConnectionFailed, IntegrityCheckFailed, ToolFailed, UsageError, VersionMismatch
from backup_tools.pg.bin import PgBin
from backup_tools.pg.conninfo import libpq_env
from backup_tools.pg.run import check_tool_version, run, run_pipeline
from backup_tools.repo.base import Repository
from backup_tools.repo.objects import Sealing, open_object

logger = logging.getLogger(__name__)

Format = Literal["tar", "plain"]
MANIFEST = "backup_manifest"
INCREMENTAL_MIN_MAJOR = 17
MANIFEST_CHECKSUMS = "CRC32C"  # PostgreSQL's default: cheap for the server (hardware CRC) and for backup/manifest.py
TAR_VERIFY_MIN_MAJOR = 18  # pg_verifybackup reads tar-format backups from PostgreSQL 18 on
Log = Callable[[str], Any]
T = TypeVar("T")


@dataclass(frozen=True)
class ServerState:
    """What a physical backup needs to know about the server before it starts."""

    version_num: int
    version: str
    system_identifier: str
    timeline: int
    wal_segment_size: int
    summarize_wal: bool

    @property
    def major(self) -> int:
        """The PostgreSQL major version."""
        return self.version_num // 10000


@dataclass(frozen=True)
class ManifestInfo:
    """The WAL range and system identifier a backup_manifest records."""

    timeline: int
    start_lsn: str
    stop_lsn: str
    system_identifier: str | None


# With replication=database, libpq takes host, port, user and dbname from libpq_env's variables; the walsender
# answers IDENTIFY_SYSTEM (as pg_basebackup asks it, no pg_control_system() privilege needed) and plain SQL.
STATE_SQL = (
    "SELECT current_setting('server_version_num'), split_part(current_setting('server_version'), ' ', 1), "
    "(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), "
    "coalesce(current_setting('summarize_wal', true), 'off')"
)
FACTS_SQL = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text, (SELECT rolname FROM pg_roles WHERE oid = 10)"


def psql_rows(dsn: str, pg: PgBin, *queries: str, conninfo: str = "", purpose: str) -> list[list[str]]:
    """Run queries with psql (no driver to load: 0.2 s less start-up); one row of fields per query."""
    from backup_tools.pg.conninfo import ConnInfo, libpq_env

    args: list[str | os.PathLike[str]] = [pg.tool("psql"), "-X", "-A", "-t", "-q", "-F", "\x1f", "-v", "ON_ERROR_STOP=1",
                                          "--no-password"]  # fmt: skip
    if conninfo:
        args += ["-d", conninfo]  # holds no secret: the password stays in the PGPASSFILE
    for query in queries:
        args += ["-c", query]
    with libpq_env(dsn) as env:
        try:
            out = run(args, env=env, timeout=60).stdout
        except ToolFailed as e:
            reason = str(e).split(": ", 1)[-1]
            if any(word in reason for word in ("replication", "walsender", "superuser", "permission denied")):
                raise UsageError(
                    f"could not {purpose} ({reason}); a physical backup connects as a role with the REPLICATION "
                    "attribute (or a superuser), as pg_basebackup does"
                ) from e
            raise ConnectionFailed(
                f"could not {purpose} to {ConnInfo.parse(dsn).redacted()!r}: {reason}; check the host, port, user, "
                "database and password (PGPASSFILE), and that the server is running"
            ) from e
    return [line.split("\x1f") for line in out.splitlines() if line]


def server_state(dsn: str, pg: PgBin) -> ServerState:
    """Version, system identifier, timeline, WAL segment size and summarize_wal, over a replication connection."""
    rows = psql_rows(dsn, pg, "IDENTIFY_SYSTEM", STATE_SQL, conninfo="replication=database",
                     purpose="connect for a physical backup")  # fmt: skip
    try:
        (sysid, tli, *_), (num, version, seg, summarize) = rows
        return ServerState(int(num), version, sysid, int(tli), int(seg), summarize == "on")
    except ValueError as e:
        raise UsageError(f"the server answered IDENTIFY_SYSTEM and its settings unexpectedly: {rows!r}") from e


def after_backup_facts(dsn: str, pg: PgBin) -> dict[str, str]:
    """The next xid (so xid targets can pick a backup) and the bootstrap superuser (for restore tests)."""
    ((xid, superuser),) = psql_rows(dsn, pg, FACTS_SQL, purpose="read the next xid")
    return {"next_xid": xid, "superuser": superuser}


def check_incremental(state: ServerState) -> None:
    """Refuse an incremental backup the server cannot take, saying why and what to do."""
    if state.major < INCREMENTAL_MIN_MAJOR:
        raise VersionMismatch(
            f"incremental backups need PostgreSQL {INCREMENTAL_MIN_MAJOR} or later, the server runs {state.version}; "
            "take --kind full backups (and archive WAL for point-in-time recovery) instead"
        )
    if not state.summarize_wal:
        raise UsageError(
            "incremental backups need summarize_wal = on, and it is off on the server; run "
            "ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); then take a --kind full backup "
            "before the next incremental"
        )


def run_basebackup(
    *,
    dsn: str,
    pg: PgBin,
    dest: Path,
    fmt: Format,
    server_version_num: int,
    incremental_manifest: Path | None = None,
    label: str,
    sync: bool = True,
) -> None:
    """Run pg_basebackup into dest (tar or plain, WAL streamed, with a manifest); stdin closed, no password on argv."""
    tool = pg.tool("pg_basebackup")
    check_tool_version(tool, server_version_num, known=pg)
    args: list[str | os.PathLike[str]] = [
        tool, "-D", dest, "-F", fmt[0], "-X", "stream", "--checkpoint=fast", "--label", label, "--no-password",
        f"--manifest-checksums={MANIFEST_CHECKSUMS}",  # named, so the streaming check knows it before the manifest
    ]  # fmt: skip
    if incremental_manifest is not None:
        args += ["--incremental", incremental_manifest]
    if not sync:
        args.append("--no-sync")
    with _basebackup_env(dsn) as env:
        run(args, env=env, timeout=None)


def stream_basebackup(
    *,
    dsn: str,
    pg: PgBin,
    consumer: Callable[[IO[bytes]], T],
    server_version_num: int,
    incremental_manifest: Path | None = None,
    label: str,
) -> T:
    """Run pg_basebackup to stdout into consumer: one tar, its WAL fetched into pg_wal/, backup_manifest last."""
    tool = pg.tool("pg_basebackup")
    check_tool_version(tool, server_version_num, known=pg)
    args: list[str | os.PathLike[str]] = [
        tool, "-D", "-", "-F", "t", "-X", "fetch", "--checkpoint=fast", "--label", label, "--no-password",
        f"--manifest-checksums={MANIFEST_CHECKSUMS}",
    ]  # fmt: skip
    if incremental_manifest is not None:
        args += ["--incremental", incremental_manifest]
    with _basebackup_env(dsn) as env:
        return run_pipeline([args], consumer=consumer, env=env).value


@contextmanager
def _basebackup_env(dsn: str) -> Iterator[dict[str, str | None]]:
    """libpq's environment for dsn around a pg_basebackup run; a lack of WAL summaries says to take a full backup."""
    with libpq_env(dsn) as env:
        try:
            yield env
        except ToolFailed as e:
            if "WAL summar" in str(e):
                raise UsageError(
                    f"{e}; the server has no WAL summaries since the parent backup (summarize_wal was off, or "
                    "wal_summary_keep_time expired): take a --kind full backup"
                ) from e
            raise


def verify_dir(
    path: Path, *, pg: PgBin, fmt: Format, scans: dict[str, TarScan] | None = None, segment_size: int | None = None
) -> None:
    """Verify a staged or fetched backup directory against its backup_manifest.

    Tar format: the tars' members are compared with the manifest (sizes and checksums: backup/manifest.py), from
    scans made while the tars streamed or, without them, by reading the tars once; pg_wal.tar must hold every
    segment of the backup's WAL range (segment_size known). pg_verifybackup runs too where it reads the format
    natively: plain directories always, tar files from PostgreSQL 18 on (WAL: checked via the archive).
    """
    if fmt == "tar":
        manifest = path / MANIFEST
        if scans is not None or pg.major < TAR_VERIFY_MIN_MAJOR:
            algorithm = manifest_algorithm(manifest)
            found = dict(scans or {})
            for tar in sorted(path.glob("*.tar")):
                if tar.name != "pg_wal.tar" and tar.name not in found:
                    found[tar.name] = scan_file(tar, algorithm=algorithm)
            check_tars(manifest, found)
            if segment_size and (path / "pg_wal.tar").exists():
                check_wal_tar(path / "pg_wal.tar", manifest, segment_size=segment_size)
            elif segment_size and "base.tar" in found:  # a streamed backup: its WAL was fetched into base.tar
                check_wal_members(found["base.tar"].members, manifest, segment_size=segment_size, where="base.tar")
        if pg.major < TAR_VERIFY_MIN_MAJOR:
            return
    args: list[str | os.PathLike[str]] = [pg.tool("pg_verifybackup"), "--quiet", "--exit-on-error"]
    if fmt == "tar":
        args += ["--format=t", "--no-parse-wal"]
    try:
        run([*args, path], timeout=None)
    except ToolFailed as e:
        raise IntegrityCheckFailed(f"pg_verifybackup rejected the backup in {path}: {e}") from e


def read_manifest(path: Path) -> ManifestInfo:
    """The WAL range (timeline, start and end LSN) and system identifier of a backup_manifest."""
    try:
        doc = json.loads(path.read_text())
        ranges = doc["WAL-Ranges"]
        first, last = ranges[-1], ranges[0]  # newest timeline first in a manifest
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise IntegrityCheckFailed(f"{path} is not a readable backup manifest ({e}); take the backup again") from e
    sysid = doc.get("System-Identifier")
    return ManifestInfo(int(last["Timeline"]), first["Start-LSN"], last["End-LSN"], str(sysid) if sysid else None)


def extract_backup(
    repo: Repository, record: BackupRecord, dest: Path, *, sealing: Sealing | None, log: Log = logger.info
) -> int:
    """Fetch a backup's objects (checksums verified) and unpack them into dest, two at a time; return the bytes."""
    (dest / "pg_wal").mkdir(mode=0o700, exist_ok=True)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="extract") as pool:
        jobs = [
            pool.submit(_extract_one, repo, record, entry, dest, sealing=sealing, log=log) for entry in record.files
        ]
        return sum(job.result() for job in jobs)


def _extract_one(
    repo: Repository, record: BackupRecord, entry: Any, dest: Path, *, sealing: Sealing | None, log: Log
) -> int:
    key = f"{BACKUPS}/{record.id}/{entry.name}"
    stream = open_object(
        repo, key, codec=entry.codec, sealing=sealing, scope=record.id, size=entry.size, sha256=entry.sha256,
        plain_size=entry.plain_size, plain_sha256=entry.plain_sha256,
    )  # fmt: skip
    base = entry.name.removesuffix(".zst").removesuffix(".gz")
    # a plain object in a local repository: tar reads the file, the stream beside it only checks the sha256
    local = repo.local_path(key) if entry.codec == "none" and not sealing else None
    log(f"### Fetching {key} ({entry.size} bytes)")
    try:
        with stream:
            if base == MANIFEST:
                (dest / MANIFEST).write_bytes(stream.read())
            elif base.endswith(".tar"):
                target = dest / "pg_wal" if base == "pg_wal.tar" else dest
                target.mkdir(mode=0o700, exist_ok=True)
                untar(stream, target, path=local)
            else:
                raise UsageError(
                    f"{key}: cannot restore {entry.name} (tablespaces are not supported yet); "
                    "restore it by hand with tar"
                )
    except (tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, EOFError) and e.errno is not None:
            raise
        raise IntegrityCheckFailed(
            f"{key} in {repo.url} is damaged ({e}): truncated or corrupted; restore another backup"
        ) from e
    return entry.plain_size or entry.size
