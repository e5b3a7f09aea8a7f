"""Restore one table's rows from a logical backup: keep a safety copy first, or load a side table to compare.

Replacing a table runs in one transaction: lock the table, copy it to `<table>_before_restore_<UTC time>`,
delete its rows, COPY the backup's rows in, check foreign keys, commit; any failure leaves it as it was.
Foreign keys: when other tables reference the table (e.g. chat_messages -> cases), its rows are swapped with
session_replication_role = replica, so no ON DELETE CASCADE fires and no child row is touched (this needs a
superuser, or on PostgreSQL 15+ the SET privilege on session_replication_role). Then every foreign key from
or to the table is checked; if any row would be left without its parent the whole restore is rolled back
with an IntegrityCheckFailed naming the constraint: restore the related tables too, or restore into a side table
(`into=`) and repair by hand. Sequences are not changed (they only move forward in the live database).
A table that no longer exists (DROP TABLE) is recreated from the backup with its indexes, foreign keys, triggers
and policies.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from backup_tools.errors import BackupToolsError, IntegrityCheckFailed, UsageError
from backup_tools.pg.bin import PgBin
from backup_tools.pg.checks import Fingerprint, fingerprint, foreign_key_violations
from backup_tools.pg.conn import connect, libpq_env, server_info
from backup_tools.pg.run import check_tool_version, redact, run_pipeline
from backup_tools.repo.base import Repository
from backup_tools.restore.logical import fetched, find_logical_backup, restore_argv, select_tables

COPY_BATCH = 1 << 20
_logger = logging.getLogger("backup_tools")
Log = Callable[[str], Any]  # where progress lines go: the CLI passes its stderr writer, else logging
_COPY_HEADER = re.compile(rb"^COPY (.+?)(?: \((.*)\))? FROM stdin;\n?$")
_ENCODING = re.compile(rb"^SET client_encoding = '([A-Za-z0-9_]+)';")


@dataclass(frozen=True)
class TableRestoreResult:
    """What a table-level restore did, and whether the table now matches the backup's fingerprint."""

    backup_id: str
    table: str
    target: str
    safety_copy: str | None
    rows: int
    created: bool
    differences: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """The restored rows are exactly those recorded at backup time."""
        return not self.differences


def split_identifiers(text: str, sep: str) -> list[str]:
    """Split pg_dump's rendering of identifiers ("a", b, "c""d") on sep outside quotes, and unquote them."""
    parts, current, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            if quoted and text[i + 1 : i + 2] == '"':
                current.append('"')
                i += 1
            else:
                quoted = not quoted
        elif not quoted and text.startswith(sep, i):
            parts.append("".join(current).strip())
            current = []
            i += len(sep) - 1
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current).strip())
    return parts


def _until_terminator(stream: IO[bytes]) -> Iterator[bytes]:
    for line in stream:
        if line in (b"\\.\n", b"\\."):
            return
        yield line
    raise IntegrityCheckFailed("the dump ended inside a COPY block (no \\. terminator): the backup is truncated")


def load_table_rows(
    conn: psycopg.Connection, stream: IO[bytes], *, schema: str, table: str, target: sql.Composable
) -> int:
    """Find the table's `COPY … FROM stdin;` block in a pg_dump SQL stream, COPY its rows into target, count them."""
    for line in stream:
        if m := _ENCODING.match(line):
            conn.execute("SELECT set_config('client_encoding', %s, true)", [m.group(1).decode()])
            continue
        header = _COPY_HEADER.match(line)
        if not header:
            continue
        name = split_identifiers(header.group(1).decode(), ".")
        columns = split_identifiers(header.group(2).decode(), ", ") if header.group(2) else []
        data = _until_terminator(stream)
        if (name[0] if len(name) > 1 else schema, name[-1]) != (schema, table):
            for _ in data:  # another table's rows
                pass
            continue
        cols = sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, columns))) if columns else sql.SQL("")
        rows, batch, size = 0, [], 0
        with conn.cursor().copy(sql.SQL("COPY {}{} FROM STDIN").format(target, cols)) as copy:
            for row in data:
                batch.append(row)
                size += len(row)
                rows += 1
                if size >= COPY_BATCH:
                    copy.write(b"".join(batch))
                    batch, size = [], 0
            copy.write(b"".join(batch))
        return rows
    raise UsageError(f"the backup holds no rows for {schema}.{table} (schema-only, or the table was not dumped)")


def restore_table(
    repo: Repository,
    backup_id: str,
    dsn: str,
    table: str,
    *,
    into: str | None = None,
    safety_copy: bool = True,
    key_file: str | None = None,
    pg: PgBin,
    timeout: float | None = None,
    log: Log = _logger.info,
) -> TableRestoreResult:
    """Replace one table's rows with the backup's (after a safety copy), or load them into a new side table."""
    say = log
    started = time.monotonic()
    record = find_logical_backup(repo, backup_id)
    schema, fmt = record.options.get("schema", "public"), record.options["format"]
    if record.options.get("schema_only") or table not in record.fingerprints:
        raise UsageError(f"backup {record.id} holds no rows of table {table!r}; pick a backup that dumped its data")
    tool = pg.tool("pg_restore") if fmt != "plain" else None
    with connect(dsn, purpose="connect for a table restore") as conn:
        if tool is not None:
            check_tool_version(tool, server_info(conn).version_num, minimum_major=record.options.get("pg_dump_major"))
        exists = _table_exists(conn, schema, table)
        target_name = into or table
        if into is not None and (not exists or _table_exists(conn, schema, into)):
            raise UsageError(
                f"cannot restore {table} into side table {into}: "
                + (f"{schema}.{into} already exists; pick another name or drop it" if exists else
                   f"{schema}.{table} does not exist to copy its definition from; restore it without into=")
            )  # fmt: skip
        copy_name = None
        with fetched(repo, record, key_file=key_file, log=say) as path:
            if not exists:
                if tool is None:
                    raise UsageError(f"{schema}.{table} does not exist; recreate it from a custom/directory backup")
                say(f"table {schema}.{table} does not exist; recreating it from backup {record.id}")
                use_list = select_tables(tool, path, schema=schema, tables=[table], dependents=True)
                argv = restore_argv(tool, fmt, path, database=conn.info.dbname, use_list=use_list, clean=False, jobs=1,
                                    single=True, no_owner=False)  # fmt: skip
                with libpq_env(dsn) as env:
                    run_pipeline([argv], env=env, timeout=timeout)
                count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
                rows = int(conn.execute(count).fetchone()[0])
            else:
                conn.autocommit = False
                try:
                    copy_name, rows = _swap_rows(conn, record.id, path, fmt, schema, table, into=into,
                                                 safety_copy=safety_copy, tool=tool, dsn=dsn, timeout=timeout)  # fmt: skip
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
                finally:
                    conn.autocommit = True
        say(f"loaded {rows} row(s) of {table} into {target_name}" + (f"; safety copy {copy_name}" if copy_name else ""))
        got = fingerprint(conn, tables=[target_name], schema=schema)
    renamed = Fingerprint({table: got.tables[target_name]} if target_name in got.tables else {})
    expected = Fingerprint.from_dict({table: record.fingerprints[table]})
    return TableRestoreResult(record.id, table, target_name, copy_name, rows, not exists,
                              tuple(renamed.diff(expected)), time.monotonic() - started)  # fmt: skip


def _table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    qualified = sql.Identifier(schema, table).as_string(conn)
    return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", [qualified]).fetchone()[0])


def _referenced_by_others(conn: psycopg.Connection, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confrelid = %s::regclass AND conrelid <> confrelid",
        [sql.Identifier(schema, table).as_string(conn)],
    ).fetchone()
    return bool(row[0])


def _swap_rows(conn: psycopg.Connection, backup_id: str, path: Path, fmt: str, schema: str, table: str, *,
               into: str | None, safety_copy: bool, tool: Path | None, dsn: str,
               timeout: float | None) -> tuple[str | None, int]:  # fmt: skip
    """Inside the caller's transaction: safety copy, clear, load; return (safety copy name, rows loaded)."""
    source = sql.Identifier(schema, table)
    conn.execute("SET LOCAL lock_timeout = '30s'")
    copy_name = None
    if into is not None:
        target = sql.Identifier(schema, into)
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(target, source))
    else:
        target = source
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(source))
        if safety_copy:
            copy_name = f"{table[:40]}_before_restore_{datetime.now(UTC):%Y%m%d%H%M%S}"
            while _table_exists(conn, schema, copy_name):
                copy_name += "_"
            conn.execute(sql.SQL("CREATE TABLE {} AS TABLE {}").format(sql.Identifier(schema, copy_name), source))
        if _referenced_by_others(conn, schema, table):
            try:
                conn.execute("SET LOCAL session_replication_role = replica")
            except psycopg.errors.InsufficientPrivilege as e:
                raise UsageError(
                    f"{schema}.{table} is referenced by other tables' foreign keys; replacing its rows without "
                    "cascading needs a superuser (or SET privilege on session_replication_role); "
                    "restore into a side table with into= instead"
                ) from e
        conn.execute(sql.SQL("DELETE FROM {}").format(source))

    def consume(out: IO[bytes]) -> int:
        rows = load_table_rows(conn, out, schema=schema, table=table, target=target)
        for _ in out:  # read to the end, so pg_restore is not killed by SIGPIPE
            pass
        return rows

    try:
        if fmt == "plain":
            with open(path, "rb") as out:
                rows = consume(out)
        else:
            with libpq_env(dsn) as env:
                stage = [str(tool), "--data-only", "--table", table, "--file", "-", str(path)]
                rows = run_pipeline([stage], consumer=consume, env=env, timeout=timeout).value
    except psycopg.Error as e:
        raise BackupToolsError(
            f"loading {table} from backup {backup_id} failed, so nothing was changed: {redact(str(e).strip())}"
        ) from e
    if into is None:
        broken = [
            v for v in foreign_key_violations(conn, schema=schema) if v.startswith(f"{table}.") or f"-> {table}:" in v
        ]
        if broken:
            raise IntegrityCheckFailed(
                f"restoring {table} from backup {backup_id} would break foreign keys, so nothing was changed: "
                + "; ".join(broken)
                + ". Restore the related tables from the same backup too, or use into= to compare by hand"
            )
    return copy_name, rows
