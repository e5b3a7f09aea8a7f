"""Connection strings: parse, redact, hand to tools through the environment and a 0600 PGPASSFILE, connect fast."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.string import TextBinaryLoader, TextLoader

from backup_tools.errors import ConnectionFailed, UsageError
from backup_tools.pg.run import redact

DEFAULT_CONNECT_TIMEOUT = 10
# libpq connection parameters and the environment variables libpq reads for them.
ENV_FOR_PARAM = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "passfile": "PGPASSFILE",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "requiressl": "PGREQUIRESSL",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}


@dataclass(frozen=True)
class ConnInfo:
    """A parsed connection string, its password kept apart from the other parameters."""

    params: dict[str, str]
    password: str | None = None

    @classmethod
    def parse(cls, dsn: str) -> ConnInfo:
        """Parse a key=value or postgresql:// connection string; a malformed one is a UsageError."""
        try:
            params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
        except psycopg.Error as e:
            raise UsageError(
                f"invalid connection string {redact(dsn)!r}: {redact(str(e))}; "
                "use key=value pairs (host=... dbname=...) or postgresql://user@host:port/dbname"
            ) from e
        password = params.pop("password", None)
        return cls(params, password or None)

    @property
    def dbname(self) -> str | None:
        """The database named by the connection string (libpq may still take it from PGDATABASE or the user)."""
        return self.params.get("dbname")

    def redacted(self) -> str:
        """The connection string for messages: every parameter, the password shown as ***."""
        shown = dict(self.params)
        if self.password is not None:
            shown["password"] = "***"
        return make_conninfo(**shown)

    def dsn(self) -> str:
        """The full connection string, password included: only for in-process libpq, never argv or logs."""
        extra = {"password": self.password} if self.password is not None else {}
        return make_conninfo(**self.params, **extra)


def redact_dsn(dsn: str) -> str:
    """A connection string with its password replaced by ***, even when it cannot be parsed."""
    try:
        return ConnInfo.parse(dsn).redacted()
    except UsageError:
        return redact(dsn)


def _escape_passfile(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextmanager
def libpq_env(dsn: str, *, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT) -> Iterator[dict[str, str | None]]:
    """Environment for a libpq tool: PG* variables, a private 0600 PGPASSFILE for a password, no PGPASSWORD.

    Values of None mean "remove from the inherited environment" (runner.run honours that).
    """
    info = ConnInfo.parse(dsn)
    unknown = sorted(k for k in info.params if k not in ENV_FOR_PARAM)
    if unknown:
        raise UsageError(
            f"connection parameter(s) {', '.join(unknown)} in {info.redacted()!r} cannot be passed to PostgreSQL tools "
            "through the environment; move them to a libpq service file (service=...)"
        )
    env: dict[str, str | None] = {ENV_FOR_PARAM[k]: v for k, v in info.params.items()}
    env.setdefault("PGCONNECT_TIMEOUT", str(connect_timeout))
    tmpdir: str | None = None
    try:
        if info.password is not None:
            tmpdir = tempfile.mkdtemp(prefix="pgdrill-pass-")
            passfile = Path(tmpdir) / "pgpass"
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"*:*:*:*:{_escape_passfile(info.password)}\n")
            env["PGPASSFILE"] = str(passfile)
            env["PGPASSWORD"] = None  # it would win over the passfile
        yield env
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


_TEXT_TYPES = (0, "text", "varchar", "bpchar", "name", '"char"')  # 0: unknown (literals)


class _SqlAsciiTextLoader(TextLoader):
    """Text of a SQL_ASCII database as str (UTF-8; other bytes kept as surrogate escapes), never bytes."""

    def load(self, data: bytes | bytearray | memoryview) -> str:
        return bytes(data).decode("utf-8", "surrogateescape")


class _SqlAsciiTextBinaryLoader(_SqlAsciiTextLoader):
    format = TextBinaryLoader.format


def text_as_str(conn: psycopg.Connection) -> psycopg.Connection:
    """Make a connection to a SQL_ASCII database read and write text as str (psycopg uses bytes there); return it.

    The client encoding becomes UTF8 (the server converts nothing for SQL_ASCII), so queries may hold any text.
    """
    if conn.info.encoding == "ascii":
        conn.execute("SET client_encoding TO 'UTF8'")
        if not conn.autocommit:
            conn.commit()
        for name in _TEXT_TYPES:
            conn.adapters.register_loader(name, _SqlAsciiTextLoader)
            if name:
                conn.adapters.register_loader(name, _SqlAsciiTextBinaryLoader)
    return conn


def connect(
    dsn: str, *, autocommit: bool = True, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT, purpose: str = "connect"
) -> psycopg.Connection:
    """Open a connection that fails within connect_timeout; errors never show the password."""
    info = ConnInfo.parse(dsn)
    params = {"connect_timeout": str(connect_timeout)} | info.params
    try:
        return text_as_str(psycopg.connect(ConnInfo(params, info.password).dsn(), autocommit=autocommit))
    except psycopg.Error as e:
        reason = " ".join(redact(str(e)).split())  # one line
        if info.password and len(info.password) >= 4:
            reason = reason.replace(info.password, "***")
        hint = "check the host, port, user, database and password (PGPASSFILE), and that the server is running"
        raise ConnectionFailed(f"could not {purpose} to {info.redacted()!r}: {reason}; {hint}") from e


@dataclass(frozen=True)
class ServerInfo:
    """What a backup records about the server it read."""

    version_num: int
    version: str
    system_identifier: str | None

    @property
    def major(self) -> int:
        """The PostgreSQL major version (10 and later)."""
        return self.version_num // 10000


def server_info(conn: psycopg.Connection) -> ServerInfo:
    """Version and system identifier of the connected server (identifier None without the privilege to read it)."""
    version_num = int(conn.execute("SHOW server_version_num").fetchone()[0])
    version = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]
    try:
        with conn.transaction():
            row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        system_identifier = row[0] if row else None
    except psycopg.errors.InsufficientPrivilege:
        system_identifier = None
    return ServerInfo(version_num, version, system_identifier)
