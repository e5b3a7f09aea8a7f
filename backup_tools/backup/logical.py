"""Logical backups with pg_dump into a repository, fingerprinted in the same snapshot as the dump."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import psycopg

from backup_tools.backup.physical import check_identity
from backup_tools.backup.staging import clear_stale, new_staging, staging_root
from backup_tools.catalog import BACKUPS, BackupRecord, FileEntry, new_backup_id
from backup_tools.errors import BackupToolsError, UsageError
from backup_tools.pg.bin import PgBin
from backup_tools.pg.checks import fingerprint, fingerprint_schemas, table_keys
from backup_tools.pg.conn import ConnInfo, connect, libpq_env, server_info
from backup_tools.pg.run import check_tool_version, redact, run_pipeline
from backup_tools.pg.schemadigest import schema_digest
from backup_tools.repo.base import Repository
from backup_tools.repo.compress import SUFFIXES, check_codec
from backup_tools.repo.objects import Sealing, StoredObject, new_sealing, store_object
from backup_tools.repo.policy import enforce

Format = Literal["custom", "directory", "plain"]
FORMATS = ("custom", "directory", "plain")
DUMP_NAME = {"custom": "dump.pgdump", "directory": "dump", "plain": "dump.sql"}
_logger = logging.getLogger("backup_tools")
Log = Callable[[str], Any]  # where progress lines go: the CLI passes its stderr writer, else logging


def quote_pattern(schema: str, table: str) -> str:
    """An exact-match pg_dump/psql pattern for schema.table (quoted, so wildcards and dots are literal)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))


@dataclass(frozen=True)
class DumpOptions:
    """What a logical backup dumps and how it stores it; invalid combinations are refused when made.

    compression: None leaves it to pg_dump (custom and directory dumps are gzip-compressed inside); a codec
    ("zstd", "gzip", "none") makes pg_dump write uncompressed and compresses the stored objects instead.
    key_file encrypts the stored objects (repo/objects), as for physical backups.
    """

    fmt: Format = "custom"
    jobs: int = 1
    schema_only: bool = False
    data_only: bool = False
    tables: tuple[str, ...] = ()
    schema: str = "public"
    compression: str | None = None
    key_file: str | None = None
    timeout: float | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", tuple(self.tables))
        if self.fmt not in FORMATS:
            raise UsageError(f"unknown dump format {self.fmt!r}: use one of {', '.join(FORMATS)}")
        if self.jobs < 1 or (self.jobs > 1 and self.fmt != "directory"):
            raise UsageError(f"jobs={self.jobs}: parallel pg_dump (-j) needs fmt='directory' and jobs >= 1")
        if self.schema_only and self.data_only:
            raise UsageError("schema_only and data_only exclude each other; a full dump has both")


def backup_logical(
    dsn: str,
    repo: Repository,
    options: DumpOptions = DumpOptions(),
    *,
    pg: PgBin,
    log: Log = _logger.info,
) -> BackupRecord:
    """Dump one database with pg_dump into repo; the catalog record is DONE only when every object is stored."""
    say = log
    o = options
    fmt, jobs, schema_only, data_only, tables, schema = o.fmt, o.jobs, o.schema_only, o.data_only, o.tables, o.schema
    compression, key_file, timeout, label = o.compression, o.key_file, o.timeout, o.label
    codec = check_codec(compression) if compression is not None else "none"
    pg_dump = pg.tool("pg_dump")
    info = ConnInfo.parse(dsn)
    with connect(dsn, purpose="connect for a logical backup") as conn:
        server = server_info(conn)
        dump_major = check_tool_version(pg_dump, server.version_num)
        missing = sorted(set(tables) - set(table_keys(conn, schema=schema)))
        if missing:
            raise UsageError(
                f"table(s) {', '.join(missing)} not found in schema {schema} of {info.redacted()!r}; "
                "nothing was backed up. Check the names (case-sensitive, without the schema)"
            )
        with repo.lock():
            identity: dict | None | bool = False
            if server.system_identifier is not None:
                identity = check_identity(repo, system_identifier=server.system_identifier, major=server.major)
            sealing = new_sealing(key_file)
            enforce(repo, sealing.meta if sealing else None, what="take a logical backup", identity=identity)
            began = datetime.now(UTC)
            record = BackupRecord(
                id=new_backup_id(began, "logical"),
                kind="logical",
                status="STARTED",
                start_time=began,
                pg_version=server.version,
                system_identifier=server.system_identifier,
                encryption=sealing.meta if sealing else None,
                options={
                    "format": fmt,
                    "jobs": jobs,
                    "schema_only": schema_only,
                    "data_only": data_only,
                    "tables": list(tables),
                    "schema": schema,
                    "compression": compression,
                    "database": conn.info.dbname,
                    "pg_dump_major": dump_major,
                    **({"label": label} if label else {}),
                },
            )
            say(f"### Logical backup {record.id} ({fmt}) of {info.redacted()} into {repo.url}")
            repo.write_catalog(record)
            stored: list[FileEntry] = []
            try:
                conn.autocommit = False  # the snapshot transaction stays open until pg_dump is done
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
                if schema_only:
                    prints = {}
                elif tables:
                    prints = fingerprint(conn, tables=list(tables), schema=schema).to_dict()
                else:  # the whole database: every schema's tables, and the schema itself
                    prints = fingerprint_schemas(conn).to_dict()
                    record.options["schema_digest"] = schema_digest(conn)
                say(f"snapshot {snapshot} exported; {len(prints)} table(s) fingerprinted in it; running pg_dump")
                argv = _dump_argv(pg_dump, fmt, snapshot=snapshot, schema_only=schema_only, data_only=data_only,
                                  tables=[quote_pattern(schema, t) for t in tables], jobs=jobs,
                                  uncompressed=compression is not None)  # fmt: skip
                with libpq_env(dsn) as env:
                    _store_dump(repo, record.id, fmt, argv, env=env, codec=codec, sealing=sealing, timeout=timeout,
                                stored=stored)  # fmt: skip
                conn.rollback()
                done = record.with_changes(
                    status="DONE", stop_time=datetime.now(UTC), files=tuple(stored), fingerprints=prints
                )
            except BaseException as e:
                _mark_failed(repo, record, stored, e)
                raise
            # DONE last and outside the clean-up: a write whose answer was lost may still land later, so the
            # objects it lists must stay (a failure here leaves the backup STARTED, never listed as good)
            repo.write_catalog(done)
    say(f"### Logical backup {done.id} DONE: {len(done.files)} object(s), {done.size} bytes")
    return done


def _dump_argv(
    pg_dump: Path,
    fmt: str,
    *,
    snapshot: str,
    schema_only: bool,
    data_only: bool,
    tables: list[str],
    jobs: int,
    uncompressed: bool,
) -> list[str]:
    argv = [str(pg_dump), "--no-password", f"--snapshot={snapshot}", f"--format={fmt}"]
    if schema_only:
        argv.append("--schema-only")
    if data_only:
        argv.append("--data-only")
    elif fmt == "plain":
        argv += ["--clean", "--if-exists"]  # a plain script cannot be told to clean at restore time
    if tables:
        argv.append("--strict-names")
        for pattern in tables:
            argv += ["--table", pattern]
    if jobs > 1:
        argv += ["--jobs", str(jobs)]
    if uncompressed:  # level 0 is "no compression" in every pg_dump; "none" only from 16 (15 refuses it, 14 took it as 0)
        argv.append("--compress=0")
    return argv


def _store_dump(
    repo: Repository,
    backup_id: str,
    fmt: str,
    argv: list[str],
    *,
    env: dict[str, str | None],
    codec: str,
    sealing: Sealing | None,
    timeout: float | None,
    stored: list[FileEntry],
) -> None:
    """Run pg_dump and stream its output into the repository, appending each stored object to `stored`."""

    def keep(name: str, src: Path | IO[bytes]) -> None:
        name += SUFFIXES[codec]
        obj: StoredObject = store_object(repo, f"{BACKUPS}/{backup_id}/{name}", src, codec=codec, sealing=sealing,
                                         scope=backup_id)  # type: ignore[arg-type]  # fmt: skip
        stored.append(FileEntry(name, obj.size, obj.sha256, codec, obj.plain_size, obj.plain_sha256))

    if fmt == "directory":
        root = staging_root(repo, None)  # 0700; what a killed run left there is removed first (the lock is held)
        clear_stale(root, locked=repo.local_path("staging") is not None, log=_logger.info)
        tmp = new_staging(root, backup_id, repo_url=repo.url)
        try:
            target = tmp / DUMP_NAME[fmt]
            run_pipeline([[*argv, "--file", str(target)]], env=env, timeout=timeout)
            for path in sorted(target.iterdir()):
                keep(f"{DUMP_NAME[fmt]}/{path.name}", path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    run_pipeline([argv], consumer=lambda out: keep(DUMP_NAME[fmt], out), env=env, timeout=timeout)


def _mark_failed(repo: Repository, record: BackupRecord, stored: list[FileEntry], error: BaseException) -> None:
    """Remove what a failed backup stored and record it as FAILED (never listed as good)."""
    prefix = f"{BACKUPS}/{record.id}/"
    with repo.cleanup():  # short deadlines: a hanging endpoint must not hold the command
        _mark_failed_now(repo, record, prefix, error)


def _mark_failed_now(repo: Repository, record: BackupRecord, prefix: str, error: BaseException) -> None:
    try:
        for key in repo.list(prefix):
            if not key.endswith("/catalog.json"):
                repo.delete(key)
        reason = redact(str(error)) if isinstance(error, BackupToolsError | psycopg.Error) else type(error).__name__
        failed = record.with_changes(
            status="FAILED", stop_time=datetime.now(UTC), options={**record.options, "error": reason[:2000]}
        )
        repo.write_catalog(failed)
    except BackupToolsError as e:
        _logger.error(
            "could not mark backup %s as FAILED in %s: %s; its catalog still says STARTED, which never lists as good",
            record.id,
            repo.url,
            e,
        )
