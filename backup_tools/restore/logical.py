"""Restore logical backups with pg_restore (or psql for plain dumps), then check the catalog's fingerprints."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from backup_tools.backup.logical import DUMP_NAME
from backup_tools.catalog import BACKUPS, BackupRecord
from backup_tools.errors import BackupNotFound, IntegrityCheckFailed, UsageError
from backup_tools.pg.bin import PgBin
from backup_tools.pg.checks import Fingerprint, fingerprint_named
from backup_tools.pg.conn import connect, libpq_env, server_info
from backup_tools.pg.roles import create_missing_roles, roles_in_dump
from backup_tools.pg.run import check_tool_version, run, run_pipeline
from backup_tools.repo.base import Repository
from backup_tools.repo.compress import SUFFIXES
from backup_tools.repo.objects import copy_to_file, open_object, open_sealing

_logger = logging.getLogger("backup_tools")
Log = Callable[[str], Any]  # where progress lines go: the CLI passes its stderr writer, else logging
_LISTED_KINDS = ("TABLE DATA", "TABLE", "CONSTRAINT")
_DEPENDENT_KINDS = ("INDEX", "FK CONSTRAINT", "TRIGGER", "POLICY", "ROW SECURITY")
_TABLE_TAGGED = ("TABLE DATA", "TABLE", "ROW SECURITY")  # tagged "<schema> <table> <owner>"; others add a name
_CREATE_INDEX = re.compile(r'^CREATE (?:UNIQUE )?INDEX ("?[^" ]+"?) ON (?:ONLY )?("?[^" ]+"?\."?[^" ]+"?) ', re.M)


@dataclass(frozen=True)
class LogicalRestoreResult:
    """What a logical restore did and whether the restored tables match the backup's fingerprints."""

    backup_id: str
    database: str
    tables: tuple[str, ...]
    checked: tuple[str, ...]
    differences: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """Every checked table has exactly the rows recorded at backup time."""
        return not self.differences


def find_logical_backup(repo: Repository, backup_id: str) -> BackupRecord:
    """The DONE logical backup with that id ("latest" for the newest), or a clear error."""
    if backup_id == "latest":
        good = [r for r in repo.list_backups() if r.kind == "logical" and r.is_good]
        if not good:
            raise BackupNotFound(f"no finished logical backup in {repo.url}; take one with `backup-tools backup`")
        return good[-1]
    record = repo.read_catalog(backup_id)
    if record.kind != "logical":
        raise UsageError(f"backup {backup_id} is a {record.kind} (physical) backup; restore it with --to DIR")
    if not record.is_good:
        raise BackupNotFound(
            f"backup {backup_id} is {record.status}, not DONE: it is incomplete and cannot be restored; "
            f"pick a DONE one from `backup-tools list --repo {repo.url}`"
        )
    return record


@contextmanager
def fetched(repo: Repository, record: BackupRecord, *, key_file: str | None = None, log: Log) -> Iterator[Path]:
    """Fetch every object of a backup into a temporary directory as verified plaintext; yield the dump's path.

    Sizes and sha256 (stored and plaintext) are checked for every object before anything is restored.
    """
    sealing = open_sealing(record.encryption, key_file=key_file)
    tmp = Path(tempfile.mkdtemp(prefix="pgdrill-restore-"))
    try:
        for entry in record.files:
            name = entry.name.removesuffix(SUFFIXES[entry.codec]) if SUFFIXES[entry.codec] else entry.name
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = open_object(
                repo, f"{BACKUPS}/{record.id}/{entry.name}", codec=entry.codec, sealing=sealing, scope=record.id,
                size=entry.size, sha256=entry.sha256, plain_size=entry.plain_size, plain_sha256=entry.plain_sha256,
            )  # fmt: skip
            copy_to_file(src, dest)
        log(f"fetched and verified {len(record.files)} object(s) of {record.id} ({record.size} bytes)")
        yield tmp / DUMP_NAME[record.options["format"]]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class LogicalRestoreOptions:
    """How a logical restore runs: which tables, clean or not, parallel jobs, owners, roles, strictness, key.

    With jobs == 1 the restore is one transaction by default (single_transaction None), so a failure leaves the
    database as it was. Restoring selected tables with clean=True drops and recreates them, which fails if other
    tables' foreign keys point at them: use restore_table for that. strict=True raises IntegrityCheckFailed when
    fingerprints differ. create_roles creates the roles the dump names (owners, grantees) that the target lacks,
    as NOLOGIN.
    """

    tables: tuple[str, ...] = ()
    clean: bool = True
    jobs: int = 1
    no_owner: bool = False
    create_roles: bool = False
    single_transaction: bool | None = None
    strict: bool = True
    key_file: str | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", tuple(self.tables))


def restore_logical(
    repo: Repository,
    backup_id: str,
    dsn: str,
    options: LogicalRestoreOptions = LogicalRestoreOptions(),
    *,
    pg: PgBin,
    log: Log = _logger.info,
) -> LogicalRestoreResult:
    """Restore a logical backup into the database of dsn, stopping at the first error, and check fingerprints.

    Every object is fetched and checksum-verified before the database is touched (options: LogicalRestoreOptions).
    """
    say = log
    o = options
    tables, clean, jobs, no_owner, create_roles = o.tables, o.clean, o.jobs, o.no_owner, o.create_roles
    single_transaction, strict, key_file, timeout = o.single_transaction, o.strict, o.key_file, o.timeout
    started = time.monotonic()
    record = find_logical_backup(repo, backup_id)
    fmt = record.options["format"]
    if fmt == "plain" and tables:
        raise UsageError("a plain-format backup cannot restore selected tables; use restore_table, or all tables")
    if jobs > 1 and fmt == "plain":
        raise UsageError("jobs > 1 needs a custom or directory backup; plain dumps are replayed by psql in one session")
    single = (jobs == 1) if single_transaction is None else single_transaction
    if single and jobs > 1:
        raise UsageError("single_transaction cannot be combined with jobs > 1 (pg_restore refuses it)")
    tool = pg.tool("psql" if fmt == "plain" else "pg_restore")
    with connect(dsn, purpose="connect to the restore target") as conn:
        server = server_info(conn)
        check_tool_version(tool, server.version_num, minimum_major=record.options.get("pg_dump_major"))
        database, schema = conn.info.dbname, record.options.get("schema", "public")
        say(f"### Restoring logical backup {record.id} ({fmt}) into database {database}")
        with fetched(repo, record, key_file=key_file, log=say) as path:
            if create_roles:  # RLS policies name roles even when restored without owners and privileges
                created = create_missing_roles(conn, roles_in_dump(path, fmt=fmt, pg=pg))
                if created:
                    say(f"created NOLOGIN role(s) the dump references: {', '.join(created)} (no passwords, no "
                        "memberships: restore the origin's roles with pg_dumpall --roles-only for those)")  # fmt: skip
            use_list = select_tables(tool, path, schema=schema, tables=tables) if tables else None
            argv = restore_argv(tool, fmt, path, database=database, use_list=use_list, clean=clean and not
                                record.options.get("data_only"), jobs=jobs, single=single, no_owner=no_owner)  # fmt: skip
            with libpq_env(dsn) as env:
                run_pipeline([argv], env=env, timeout=timeout)
        say(f"{tool.name} finished in {time.monotonic() - started:.1f} s; checking fingerprints")
        expected = Fingerprint.from_dict(record.fingerprints)
        if tables:
            expected = Fingerprint({t: fp for t, fp in expected.tables.items() if t in tables})
        got = fingerprint_named(conn, sorted(expected.tables), schema=schema) if expected.tables else Fingerprint()
    differences = tuple(got.diff(expected))
    result = LogicalRestoreResult(
        record.id, database, tuple(tables), tuple(sorted(expected.tables)), differences, time.monotonic() - started
    )
    if differences and strict:
        raise IntegrityCheckFailed(
            f"restored database {database} differs from backup {record.id}'s fingerprints: "
            + "; ".join(differences)
            + ". Something changed the tables during the restore, or the restore was incomplete"
        )
    say(f"### Restore of {record.id} checked {len(result.checked)} table(s): {'OK' if result.ok else differences}")
    return result


def restore_argv(
    tool: Path,
    fmt: str,
    path: Path,
    *,
    database: str,
    use_list: Path | None = None,
    clean: bool,
    jobs: int,
    single: bool,
    no_owner: bool,
) -> list[str]:
    """The pg_restore (or psql) command: exit on the first error; connection details come from the environment."""
    target = make_conninfo(dbname=database)  # no password: libpq takes the rest from PG* and PGPASSFILE
    if fmt == "plain":
        argv = [str(tool), "--no-password", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", f"--dbname={target}"]
        return argv + (["--single-transaction"] if single else []) + ["--file", str(path)]
    argv = [str(tool), "--no-password", "--exit-on-error", f"--dbname={target}"]
    if clean:
        argv += ["--clean", "--if-exists"]
    if jobs > 1:
        argv += ["--jobs", str(jobs)]
    if single:
        argv.append("--single-transaction")
    if no_owner:
        argv += ["--no-owner", "--no-privileges"]
    if use_list is not None:
        argv.append(f"--use-list={use_list}")
    return [*argv, str(path)]


def _indexes_of(tool: Path, archive: Path, lines: list[str], tables: set[str]) -> list[str]:
    """The listing lines of the indexes on these tables (INDEX entries name no table: render them to read it)."""
    listed = archive.parent / "indexes.list"
    listed.write_text("\n".join(lines) + "\n")
    script = run([tool, "--use-list", listed, "--file=-", archive], timeout=300).stdout
    on = {m[1].strip('"'): m[2].replace('"', "") for m in _CREATE_INDEX.finditer(script)}
    return [line for line in lines if on.get(line.split("; ", 1)[1].split(" ")[4]) in tables]


def select_tables(tool: Path, archive: Path, *, schema: str, tables: Sequence[str], dependents: bool = False) -> Path:
    """Write a pg_restore --use-list holding the tables' definitions, rows and own constraints (primary keys…).

    Like pg_restore --table, other indexes, defaults, sequences, triggers and foreign keys are left out:
    they may need objects that are not restored. dependents: also the tables' indexes, foreign keys, triggers,
    row-level security and policies (to recreate a dropped table as it was). Returns the list file, next to the archive.
    """
    listing = run([tool, "--list", archive], timeout=300).stdout
    kinds = _LISTED_KINDS + (_DEPENDENT_KINDS if dependents else ())
    chosen, found, indexes = [], set(), []
    for line in listing.splitlines():
        head, sep, rest = line.partition("; ")
        if not sep or not head.strip().isdigit():
            continue
        words = rest.split(" ")[2:]  # drop "<tableoid> <oid>"
        kind = next((k for k in kinds if " ".join(words[: len(k.split())]) == k), None)
        if kind is None:
            continue
        names = words[len(kind.split()) :]  # schema, tag words…, owner
        if kind == "INDEX" and names[:1] == [schema] and len(names) == 3:
            indexes.append(line)
        elif names[:1] == [schema] and len(names) == (3 if kind in _TABLE_TAGGED else 4) and names[1] in tables:
            chosen.append(line)
            found.add(names[1])
    missing = sorted(set(tables) - found)
    if missing:
        raise UsageError(f"table(s) {', '.join(missing)} are not in this backup (schema {schema}); check the names")
    if indexes:
        chosen += _indexes_of(tool, archive, indexes, {f"{schema}.{t}" for t in tables})
    use_list = archive.parent / "selected.list"
    use_list.write_text("\n".join(chosen) + "\n")
    return use_list
