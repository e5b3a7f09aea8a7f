"""Roles a logical restore needs: read them from the origin (pg_dumpall --roles-only), or name those a dump references."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from backup_tools.errors import ToolFailed
from backup_tools.pg.bin import PgBin
from backup_tools.pg.conn import ConnInfo, connect, libpq_env
from backup_tools.pg.run import run

# Role names in a schema-only SQL script: owners, grantees, revokees, default privileges and policy roles.
_ROLE = r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_ROLE_LIST = rf"{_ROLE}(?:\s*,\s*{_ROLE})*"
_PATTERNS = (
    re.compile(rf"\bOWNER TO {_ROLE};"),
    re.compile(rf"\bGRANT [^;]+? TO ({_ROLE_LIST})(?: WITH GRANT OPTION)?;"),
    re.compile(rf"\bREVOKE [^;]+? FROM ({_ROLE_LIST});"),
    re.compile(rf"\bFOR ROLE {_ROLE}\b"),
    re.compile(rf"^CREATE POLICY .+?\n?\s*(?:AS \w+\s+)?(?:FOR \w+\s+)?TO ({_ROLE_LIST})", re.M),
)
_NOT_ROLES = {"public", "current_user", "session_user", "current_role"}
_CREATE_ROLE = re.compile(rf"^CREATE ROLE {_ROLE};$")


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()


def roles_in_script(script: str) -> list[str]:
    """The roles a schema SQL script (pg_dump or pg_restore -f -) names as owner, grantee or policy role."""
    found: set[str] = set()
    for pattern in _PATTERNS:
        for match in pattern.finditer(script):
            for name in re.findall(_ROLE, match.group(1)):
                if name.lower() not in _NOT_ROLES:
                    found.add(_unquote(name))
    return sorted(found)


def roles_in_dump(path: Path, *, fmt: str, pg: PgBin) -> list[str]:
    """The roles a logical dump references (pg_restore renders its schema; a plain script is read as is)."""
    if fmt == "plain":
        return roles_in_script(path.read_text(errors="replace"))
    script = run([pg.tool("pg_restore"), "--schema-only", "--file=-", path], timeout=600).stdout
    return roles_in_script(script)


def create_missing_roles(conn: psycopg.Connection, roles: list[str]) -> list[str]:
    """Create each role that does not exist as NOLOGIN (objects can then keep their owners); return those created."""
    existing = {r[0] for r in conn.execute("SELECT rolname::text FROM pg_roles")}
    created = [r for r in roles if r not in existing]
    for role in created:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    return created


def dump_roles(dsn: str, *, pg: PgBin) -> str:
    """The origin's roles as pg_dumpall --roles-only writes them, without passwords (ToolFailed when not permitted)."""
    argv: list[str | Path] = [pg.tool("pg_dumpall"), "--roles-only", "--no-password"]
    if pg.major >= 10:
        argv.append("--no-role-passwords")  # reads pg_roles, so a non-superuser may run it
    database = ConnInfo.parse(dsn).dbname
    if database:
        argv.append(f"--database={database}")  # the DSN's own database (postgres may be closed to the role)
    with libpq_env(dsn) as env:
        return run(argv, env=env, timeout=300).stdout


@dataclass(frozen=True)
class AppliedRoles:
    """Roles a restore target received from a pg_dumpall script."""

    created: tuple[str, ...]
    skipped: tuple[str, ...]  # already present in the target (the target's own superuser, for instance)


def apply_roles(dsn: str, script: str, *, pg: PgBin) -> AppliedRoles:
    """Run a pg_dumpall --roles-only/--globals-only script with psql, stopping at the first error.

    CREATE ROLE lines for roles the target already has are left out (their ALTER ROLE lines still run), so
    the script applies to a fresh cluster whose superuser has another name than the origin's.
    """
    with connect(dsn, purpose="read the restore target's roles") as conn:
        existing = {r[0] for r in conn.execute("SELECT rolname::text FROM pg_roles")}
    kept, created, skipped = [], [], []
    for line in script.splitlines():
        match = _CREATE_ROLE.match(line)
        if match:
            name = _unquote(match.group(1))
            (skipped if name in existing else created).append(name)
            if name in existing:
                continue
        kept.append(line)
    with tempfile.TemporaryDirectory(prefix="pgdrill-roles-") as tmp, libpq_env(dsn) as env:
        path = Path(tmp) / "roles.sql"
        path.write_text("\n".join(kept) + "\n")
        try:
            run([pg.tool("psql"), "--no-password", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
                 "--file", path], env=env, timeout=300)  # fmt: skip
        except ToolFailed as e:
            raise ToolFailed(f"applying the roles script failed: {e}") from e
    return AppliedRoles(tuple(created), tuple(skipped))
