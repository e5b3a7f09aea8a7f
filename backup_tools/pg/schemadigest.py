"""A database's schema as named, hashed definitions (tables, columns, indexes, constraints, functions, triggers,
RLS policies, sequence values, extensions, roles referenced), so a restore that loses one names it."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

_USER_NS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
    "AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
)
_NOT_EXT = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"
# Each query returns (category, name, definition); objects that belong to an extension are the extension's.
_QUERIES = {
    "tables": f"""
        SELECT n.nspname || '.' || c.relname, c.relkind::text || ' rls=' || c.relrowsecurity::text || c.relforcerowsecurity::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER_NS} AND {_NOT_EXT.format(oid="c.oid")}""",
    "columns": f"""
        SELECT n.nspname || '.' || c.relname || '.' || a.attname,
               format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull
               || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER_NS}
          AND {_NOT_EXT.format(oid="c.oid")}""",
    "indexes": f"""
        SELECT n.nspname || '.' || c.relname, pg_get_indexdef(c.oid)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_NS} AND {_NOT_EXT.format(oid="i.indrelid")}""",
    "constraints": f"""
        SELECT n.nspname || '.' || c.relname || '.' || con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_NS} AND {_NOT_EXT.format(oid="c.oid")}""",
    "functions": f"""
        SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.prokind IN ('f', 'p', 'w') AND {_USER_NS} AND {_NOT_EXT.format(oid="p.oid")}""",
    "triggers": f"""
        SELECT n.nspname || '.' || c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {_USER_NS} AND {_NOT_EXT.format(oid="c.oid")}""",
    "policies": f"""
        SELECT p.schemaname || '.' || p.tablename || '.' || p.policyname,
               concat_ws(' ', p.permissive, p.cmd, p.roles::text, p.qual, p.with_check)
        FROM pg_policies p JOIN pg_namespace n ON n.nspname = p.schemaname WHERE {_USER_NS}""",
    "extensions": "SELECT e.extname, e.extversion FROM pg_extension e WHERE e.extname <> 'plpgsql'",
}
_SEQUENCES = f"""
    SELECT n.nspname || '.' || c.relname, coalesce(s.last_value, 0)
    FROM pg_sequences s JOIN pg_namespace n ON n.nspname = s.schemaname
    JOIN pg_class c ON c.relname = s.sequencename AND c.relnamespace = n.oid
    WHERE {_USER_NS} AND {_NOT_EXT.format(oid="c.oid")}"""
_ROLES = f"""
    SELECT DISTINCT r.rolname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_roles r ON r.oid = c.relowner WHERE {_USER_NS}
    UNION SELECT DISTINCT r.rolname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    JOIN pg_roles r ON r.oid = p.proowner WHERE {_USER_NS}
    UNION SELECT DISTINCT r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE {_USER_NS}
    UNION SELECT DISTINCT unnest(p.roles)::text FROM pg_policies p
    UNION SELECT DISTINCT g.grantee FROM information_schema.role_table_grants g
    WHERE g.table_schema NOT IN ('pg_catalog', 'information_schema')"""
LABELS = {
    "tables": "table", "columns": "column", "indexes": "index", "constraints": "constraint",
    "functions": "function", "triggers": "trigger", "policies": "RLS policy", "sequences": "sequence",
    "extensions": "extension", "roles": "role",
}  # fmt: skip
# Not compared by default: who owns what differs after a restore without owners (--no-owner).
OWNERSHIP = ("roles",)


def _short(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def schema_digest(conn: psycopg.Connection) -> dict[str, dict[str, str]]:
    """Every category's objects of the connected database: name -> short hash of its definition (sequences: value)."""
    out: dict[str, dict[str, str]] = {}
    for category, query in _QUERIES.items():
        out[category] = {name: _short(str(defn)) for name, defn in conn.execute(query).fetchall()}
    out["sequences"] = {name: str(value) for name, value in conn.execute(_SEQUENCES).fetchall()}
    out["roles"] = {name: "referenced" for (name,) in conn.execute(_ROLES).fetchall() if name != "PUBLIC"}
    return out


def digest_diff(got: dict[str, Any], expected: dict[str, Any], *, skip: tuple[str, ...] = ()) -> list[str]:
    """What the restored schema lost or changed against the recorded one, each naming the object; empty when equal.

    A sequence may be ahead after a physical restore (values are logged in advance), never behind.
    """
    lines = []
    for category in sorted(set(expected) - set(skip)):
        want, have, label = expected.get(category, {}), got.get(category, {}), LABELS.get(category, category)
        for name in sorted(want):
            if name not in have:
                lines.append(f"{label} {name} missing")
            elif category == "sequences":
                if int(have[name] or 0) < int(want[name] or 0):
                    lines.append(f"{label} {name} at {have[name]}, behind its recorded value {want[name]}")
            elif have[name] != want[name]:
                lines.append(f"{label} {name} differs from its recorded definition")
        lines += [f"unexpected {label} {name}" for name in sorted(set(have) - set(want)) if category != "roles"]
    return lines
