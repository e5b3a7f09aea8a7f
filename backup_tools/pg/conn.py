"""Connect with psycopg, fast and without showing the password (parsing and tool environments: pg/conninfo.py)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.types.string import TextBinaryLoader, TextLoader

from backup_tools.errors import ConnectionFailed
from backup_tools.pg.conninfo import (  # noqa: F401 - re-exported: callers that connect import them from here
    DEFAULT_CONNECT_TIMEOUT,
    ENV_FOR_PARAM,
    ConnInfo,
    libpq_env,
    redact_dsn,
)
from backup_tools.pg.run import redact

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
