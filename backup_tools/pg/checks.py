"""Data checks computed in SQL: per-table fingerprints, foreign-key consistency and amcheck."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

_TABLES_WITH_KEYS = """
SELECT c.relname,
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                 FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""


_USER_SCHEMAS = """
SELECT n.nspname FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid
                  AND d.deptype = 'e')
ORDER BY n.nspname = 'public' DESC, n.nspname
"""


@dataclass(frozen=True)
class TableFingerprint:
    """Row count and a hash of every row, in primary-key order."""

    rows: int
    digest: str


@dataclass(frozen=True)
class Fingerprint:
    """Fingerprints of a set of tables at one point in time."""

    tables: dict[str, TableFingerprint] = field(default_factory=dict)

    def diff(self, expected: Fingerprint) -> list[str]:
        """Readable differences from the expected fingerprint; empty when equal."""
        lines = []
        for name in sorted(set(self.tables) | set(expected.tables)):
            got, want = self.tables.get(name), expected.tables.get(name)
            if want is None:
                lines.append(f"{name}: unexpected table ({got.rows} rows)")
            elif got is None:
                lines.append(f"{name}: missing (expected {want.rows} rows)")
            elif got.rows != want.rows:
                lines.append(f"{name}: {got.rows} rows, expected {want.rows} ({got.rows - want.rows:+d})")
            elif got.digest != want.digest:
                lines.append(f"{name}: same row count ({got.rows}) but row contents differ")
        return lines

    def without(self, *names: str) -> Fingerprint:
        """The same fingerprint without some tables."""
        return Fingerprint({k: v for k, v in self.tables.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        """Serialise for a catalog or a report."""
        return {name: {"rows": t.rows, "digest": t.digest} for name, t in sorted(self.tables.items())}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Fingerprint:
        """Parse what to_dict wrote."""
        return cls({name: TableFingerprint(int(t["rows"]), str(t["digest"])) for name, t in doc.items()})


def table_keys(conn: psycopg.Connection, *, schema: str = "public") -> dict[str, list[str]]:
    """Map each ordinary table of a schema to its primary-key columns (empty when it has none)."""
    return {name: list(keys) for name, keys in conn.execute(_TABLES_WITH_KEYS, [schema]).fetchall()}


def fingerprint(
    conn: psycopg.Connection, *, tables: list[str] | None = None, schema: str = "public", exclude: tuple[str, ...] = ()
) -> Fingerprint:
    """Fingerprint tables (all of the schema by default) in one snapshot; conn must be in autocommit mode."""
    keys = table_keys(conn, schema=schema)
    names = [t for t in (tables if tables is not None else keys) if t not in exclude]
    result = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for name in names:
            if name not in keys:
                result[name] = None
                continue
            order = [sql.Identifier("t", col) for col in keys[name]] or [sql.SQL("t::text")]
            query = sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY {order})), md5('')) FROM {table} AS t"
            ).format(order=sql.SQL(", ").join(order), table=sql.Identifier(schema, name))
            rows, digest = conn.execute(query).fetchone()
            result[name] = TableFingerprint(rows, digest)
    return Fingerprint({k: v for k, v in result.items() if v is not None})


def user_schemas(conn: psycopg.Connection) -> list[str]:
    """Schemas holding application tables: all but the system ones and those an extension created."""
    return [r[0] for r in conn.execute(_USER_SCHEMAS).fetchall()]


def user_databases(conn: psycopg.Connection) -> list[str]:
    """The cluster's non-template databases that accept connections, by name."""
    rows = conn.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
    return [r[0] for r in rows]


def fingerprint_schemas(conn: psycopg.Connection, *, exclude: tuple[str, ...] = ()) -> Fingerprint:
    """Fingerprint every table of every user schema; public's tables by name, the others as schema.table."""
    out: dict[str, TableFingerprint] = {}
    for schema in user_schemas(conn):
        prefix = "" if schema == "public" else f"{schema}."
        found = fingerprint(conn, schema=schema, exclude=exclude if schema == "public" else ())
        out |= {prefix + name: fp for name, fp in found.tables.items()}
    return Fingerprint(out)


def fingerprint_named(conn: psycopg.Connection, names: list[str], *, schema: str = "public") -> Fingerprint:
    """Fingerprint the tables a Fingerprint names (bare names in schema, others as schema.table)."""
    by_schema: dict[str, list[str]] = {}
    for name in names:
        where, _, table = name.rpartition(".") if "." in name else (schema, "", name)
        by_schema.setdefault(where, []).append(table)
    out: dict[str, TableFingerprint] = {}
    for where, tables in by_schema.items():
        prefix = "" if where == schema else f"{where}."
        out |= {prefix + t: fp for t, fp in fingerprint(conn, tables=tables, schema=where).tables.items()}
    return Fingerprint(out)


def foreign_key_violations(conn: psycopg.Connection, *, schema: str = "public") -> list[str]:
    """Rows whose foreign key points at no parent row, one line per constraint (empty when consistent)."""
    constraints = conn.execute(
        """
        SELECT con.conname, child.relname, parent.relname, pn.nspname,
               (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(con.conkey) WITH ORDINALITY k(n, ord)
                JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n),
               (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(con.confkey) WITH ORDINALITY k(n, ord)
                JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n)
        FROM pg_constraint con
        JOIN pg_class child ON child.oid = con.conrelid
        JOIN pg_class parent ON parent.oid = con.confrelid
        JOIN pg_namespace n ON n.oid = child.relnamespace
        JOIN pg_namespace pn ON pn.oid = parent.relnamespace
        WHERE con.contype = 'f' AND n.nspname = %s
        ORDER BY con.conname
        """,
        [schema],
    ).fetchall()
    problems = []
    for name, child, parent, parent_schema, cols, pcols in constraints:
        join = sql.SQL(" AND ").join(
            sql.SQL("p.{} = c.{}").format(sql.Identifier(pc), sql.Identifier(cc)) for cc, pc in zip(cols, pcols, strict=True)
        )
        not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(cc)) for cc in cols)
        query = sql.SQL(
            "SELECT count(*) FROM {child} c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {join})"
        )
        orphans = conn.execute(
            query.format(
                child=sql.Identifier(schema, child), parent=sql.Identifier(parent_schema, parent), not_null=not_null,
                join=join,
            )
        ).fetchone()[0]
        if orphans:
            problems.append(f"{child}.{','.join(cols)} -> {parent}: {orphans} rows without a parent ({name})")
    return problems


def amcheck_problems(conn: psycopg.Connection, *, schema: str = "public") -> list[str] | None:
    """Run amcheck's bt_index_check on every B-tree index; None when amcheck is not available."""
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'").fetchone()
    if not available:
        return None
    if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
        installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone()
        if not installed:
            return None
    else:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    indexes = conn.execute(
        """
        SELECT c.oid, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_am am ON am.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE am.amname = 'btree' AND n.nspname = %s AND i.indisvalid ORDER BY c.relname
        """,
        [schema],
    ).fetchall()
    problems = []
    for oid, name in indexes:
        try:
            conn.execute("SELECT bt_index_check(%s::regclass, true)", [oid])
        except psycopg.Error as e:
            problems.append(f"{name}: {e.diag.message_primary or e}")
    return problems


def recorded_by_database(record: Any) -> dict[str, Fingerprint]:
    """The fingerprints a catalog record holds, per database: a logical backup's, else its first restore test's."""
    if record.kind == "logical":
        return {record.options.get("database") or "postgres": Fingerprint.from_dict(record.fingerprints)}
    tested = record.fingerprints.get("restore_test") or {}
    return {db: Fingerprint.from_dict(tables) for db, tables in tested.items()}


def recorded_schemas(record: Any) -> dict[str, dict[str, Any]]:
    """The schema digests (schemadigest.schema_digest) a catalog record holds, per database; empty for older ones."""
    if record.kind == "logical":
        digest = record.options.get("schema_digest")
        return {record.options.get("database") or "postgres": digest} if digest else {}
    return dict(record.fingerprints.get("restore_test_schema") or {})
