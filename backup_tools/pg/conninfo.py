"""Connection strings without a database driver: parse, redact, and hand to tools through the environment and a
0600 PGPASSFILE. pg/conn.py connects with psycopg; backups and restores that only run PostgreSQL programs never
load it (0.2 s of start-up).

Plain key=value strings are parsed here with libpq's rules (PQconninfoParse); URIs, a dbname that is itself a
connection string and unknown keywords go to psycopg's parser (libpq itself), so every string reads as libpq reads it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from backup_tools.errors import UsageError
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


# keywords libpq knows that tools cannot take from the environment (psycopg's parser judges the rest)
OTHER_KEYWORDS = ("password", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                  "tcp_user_timeout", "replication", "fallback_application_name", "sslpassword", "sslnegotiation",
                  "scram_client_key", "scram_server_key", "oauth_issuer", "oauth_client_id", "oauth_client_secret",
                  "oauth_scope", "max_protocol_version", "min_protocol_version", "sslkeylogfile", "service")  # fmt: skip
_SPACE = " \t\n\r\f\v"
_ESCAPE = re.compile(r"([\\'])")
_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class ConnInfo:
    """A parsed connection string, its password kept apart from the other parameters."""

    params: dict[str, str]
    password: str | None = None

    @classmethod
    def parse(cls, dsn: str) -> ConnInfo:
        """Parse a key=value or postgresql:// connection string; a malformed one is a UsageError."""
        params = _parse_simple(dsn)
        if params is None:
            params = _parse_with_libpq(dsn)
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
        return make_conninfo(shown)

    def dsn(self) -> str:
        """The full connection string, password included: only for in-process libpq, never argv or logs."""
        extra = {"password": self.password} if self.password is not None else {}
        return make_conninfo({**self.params, **extra})


def make_conninfo(params: dict[str, str]) -> str:
    """key=value pairs quoted as psycopg's make_conninfo quotes them (libpq reads them back unchanged)."""
    return " ".join(f"{k}={_quote(str(v))}" for k, v in params.items())


def _quote(value: str) -> str:
    if not value:
        return "''"
    value = _ESCAPE.sub(r"\\\1", value)
    return f"'{value}'" if _WHITESPACE.search(value) else value


def _parse_simple(dsn: str) -> dict[str, str] | None:
    """libpq's key=value grammar; None for anything it leaves to libpq (URIs, expanded dbname, odd keywords)."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return None
    params: dict[str, str] = {}
    i, n = 0, len(dsn)
    while True:
        while i < n and dsn[i] in _SPACE:
            i += 1
        if i == n:
            return params
        start = i
        while i < n and dsn[i] != "=" and dsn[i] not in _SPACE:
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i] in _SPACE:
            i += 1
        if i == n or dsn[i] != "=" or (key not in ENV_FOR_PARAM and key not in OTHER_KEYWORDS):
            return None  # libpq's error message is the one to show
        i += 1
        while i < n and dsn[i] in _SPACE:
            i += 1
        value: list[str] = []
        if i < n and dsn[i] == "'":
            i += 1
            while True:
                if i == n:
                    return None  # unterminated quote
                c = dsn[i]
                if c == "\\" and i + 1 < n:
                    value.append(dsn[i + 1])
                    i += 2
                elif c == "'":
                    i += 1
                    break
                else:
                    value.append(c)
                    i += 1
        else:
            while i < n and dsn[i] not in _SPACE:
                if dsn[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(dsn[i])
                i += 1
        text = "".join(value)
        if key == "dbname" and ("=" in text or text.startswith(("postgresql://", "postgres://"))):
            return None  # libpq expands a dbname that is a connection string
        params[key] = text


def _parse_with_libpq(dsn: str) -> dict[str, str]:
    """psycopg's conninfo_to_dict (libpq's PQconninfoParse), for what _parse_simple leaves to it."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    except psycopg.Error as e:
        raise UsageError(
            f"invalid connection string {redact(dsn)!r}: {redact(str(e))}; "
            "use key=value pairs (host=... dbname=...) or postgresql://user@host:port/dbname"
        ) from e


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
