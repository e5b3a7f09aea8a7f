"""The audit trail: one hash-chained JSON line per backup-tools run, in the repository's audit/ and a table.

Each run of a verb that reads or changes a repository or database appends `audit/<seq>.json` (12-digit
sequence, written with no-overwrite so two writers never fork the chain). A line carries time, OS user,
host, command (redacted argv), repository (redacted), backup id, outcome, duration and error, plus `seq`
and `prev` (sha256 of the previous line's bytes). `verify` detects a removed line (a gap), an edited line
(the next line's `prev` no longer matches) and, given the table, a removed or edited last line.
wal-push / wal-fetch are not audited: PostgreSQL runs them once per WAL segment and the archive is their record.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

AUDIT = "audit"
GENESIS = "0" * 64
NOT_AUDITED = frozenset({"wal-push", "wal-fetch", "keygen", "evidence", "audit"})
_NOTES: dict[str, Any] = {}


def note(**facts: Any) -> None:
    """Let a verb tell the audit line what it did (backup_id, size, verified)."""
    _NOTES.update({k: v for k, v in facts.items() if v is not None})


@dataclass
class Run:
    """One audited run: filled by main(), written when it ends."""

    verb: str
    argv: list[str]
    repo: str | None
    dsn: str | None
    started: float = field(default_factory=time.time)
    code: int = 0
    error: str | None = None
    repo_failed: bool = False  # unreachable, locked or timed out: the line goes to the table only

    def fail(self, code: int, error: str, *, cause: BaseException | None = None) -> None:
        """Record a failure (exit code, its one-line message, and whether the repository itself failed)."""
        from backup_tools.errors import DocumentMissing, RepositoryError

        self.code, self.error = code, error
        self.repo_failed = isinstance(cause, RepositoryError) and not isinstance(cause, DocumentMissing)

    def argv_backup(self) -> str | None:
        """The --backup ID given on the command line (not latest/all)."""
        if "--backup" in self.argv[:-1]:
            value = self.argv[self.argv.index("--backup") + 1]
            return None if value in ("latest", "all") else value
        return None


def _redact(text: str) -> str:
    from backup_tools.pg.run import redact

    return redact(text)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def build_line(run: Run, *, ended: float, seq: int, prev: str) -> dict[str, Any]:
    """The audit record of a finished run (no secret: argv, repository and error are redacted)."""
    backup_id = _NOTES.get("backup_id") or run.argv_backup()
    return {
        "seq": seq, "prev": prev,
        "time": datetime.fromtimestamp(run.started, UTC).isoformat(timespec="milliseconds"),
        "os_user": _os_user(), "sudo_user": os.environ.get("SUDO_USER"), "host": socket.gethostname(),
        "command": _redact(" ".join(["backup-tools", *run.argv])), "verb": run.verb,
        "repository": _redact(run.repo) if run.repo else None, "backup_id": backup_id,
        "size": _NOTES.get("size"), "outcome": "ok" if run.code == 0 else "failed", "exit_code": run.code,
        "duration_s": round(ended - run.started, 3), "error": _redact(run.error) if run.error else None,
    }  # fmt: skip


def encode(line: dict[str, Any]) -> bytes:
    """A line's stored bytes: canonical JSON and a newline."""
    return (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode()


def append(repo: Any, run: Run, *, ended: float, attempts: int = 8) -> dict[str, Any]:
    """Append the run's line to repo's audit/ (retrying when another writer took the same sequence number)."""
    from backup_tools.errors import RepositoryError

    for _ in range(attempts):
        keys = repo.list(f"{AUDIT}/")
        seq, prev = 1, GENESIS
        if keys:
            last = keys[-1]
            seq = int(last.rsplit("/", 1)[-1].split(".")[0]) + 1
            prev = hashlib.sha256(repo.get_bytes(last)).hexdigest()
        line = build_line(run, ended=ended, seq=seq, prev=prev)
        try:
            repo.put_bytes(f"{AUDIT}/{seq:012d}.json", encode(line))
            return line
        except RepositoryError as e:
            if "already exists" not in str(e):
                raise
    raise RepositoryError(f"could not append to {AUDIT}/ in {repo.url}: {attempts} writers raced; run again")


TABLE_SQL = """CREATE TABLE IF NOT EXISTS backup_audit (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  backup_type VARCHAR(50) NOT NULL,
  backup_path TEXT NOT NULL,
  backup_size BIGINT,
  start_time TIMESTAMP WITH TIME ZONE NOT NULL,
  end_time TIMESTAMP WITH TIME ZONE,
  status VARCHAR(20) NOT NULL,
  error_message TEXT,
  verified BOOLEAN DEFAULT FALSE,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  os_user TEXT, host TEXT, command TEXT, backup_id TEXT, duration_s DOUBLE PRECISION, seq BIGINT, line_sha256 TEXT
)"""


def write_table(dsn: str, line: dict[str, Any], *, line_sha256: str | None) -> None:
    """Insert the line into backup_audit (created if missing; strategy 000's columns, then ours)."""
    import psycopg

    start = datetime.fromisoformat(line["time"])
    end = datetime.fromtimestamp(start.timestamp() + line["duration_s"], UTC)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(TABLE_SQL)
        conn.execute(
            "INSERT INTO backup_audit (backup_type, backup_path, backup_size, start_time, end_time, status,"
            " error_message, verified, os_user, host, command, backup_id, duration_s, seq, line_sha256)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [line["verb"], line["repository"] or "-", line["size"], start, end, line["outcome"], line["error"],
             line["verb"] == "verify" and line["outcome"] == "ok", line["os_user"], line["host"], line["command"],
             line["backup_id"], line["duration_s"], line["seq"], line_sha256],
        )  # fmt: skip


def _warn(run: Run, message: str) -> None:
    if run.code != 0:  # the run already printed its one error line (often the same unreachable repository)
        return
    print(f"backup-tools: warning: audit trail: {_redact(message)}", file=sys.stderr)


def record(run: Run) -> None:
    """Write the finished run's line to the repository and, with an audit DSN, the table; failures only warn."""
    from backup_tools.errors import BackupToolsError

    ended, line = time.time(), None
    if run.repo and not run.repo_failed:  # retrying an unreachable repository would double the time to fail
        try:
            from backup_tools.repo import open_repository

            repo = open_repository(run.repo)
            run.repo = repo.url
            local = repo.local_path("")
            if local is None or local.is_dir():  # never create a mistyped file:// path
                line = append(repo, run, ended=ended)
        except (BackupToolsError, OSError) as e:
            _warn(run, f"could not append to {run.repo}: {e}")
    if run.dsn:
        sha = hashlib.sha256(encode(line)).hexdigest() if line else None
        try:
            write_table(run.dsn, line or build_line(run, ended=ended, seq=0, prev=GENESIS), line_sha256=sha)
        except Exception as e:  # noqa: BLE001 - any database failure is reported, never raised over the verb's result
            _warn(run, f"could not write backup_audit: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


@contextmanager
def audited(args: Any, argv: Sequence[str]) -> Iterator[Run]:
    """Time the verb run inside and record it (an unexpected exception is recorded as failed, then re-raised)."""
    verb = getattr(args, "verb", "") or ""
    run = Run(verb=verb, argv=list(argv), repo=getattr(args, "repo", None),
              dsn=getattr(args, "audit_dsn", None) or os.environ.get("PGDRILL_AUDIT_DSN") or None)  # fmt: skip
    _NOTES.clear()  # main() may run many times in one process (tests, sweeps)
    if verb in NOT_AUDITED or os.environ.get("PGDRILL_AUDIT", "on").lower() in ("off", "0", "no"):
        yield run
        return
    try:
        yield run
    except BaseException as e:
        run.fail(1, f"{type(e).__name__}: {e}")
        raise
    finally:
        record(run)


@dataclass(frozen=True)
class VerifyResult:
    """What audit verify found: lines read and problems (empty when the chain is intact)."""

    lines: int
    problems: list[str]


def verify(repo: Any, *, dsn: str | None = None) -> VerifyResult:
    """Check the chain: contiguous sequence, each prev the hash of the line before, and (with dsn) the table's hashes."""
    keys, problems, prev, hashes, expected = repo.list(f"{AUDIT}/"), [], GENESIS, {}, 1
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        data = repo.get_bytes(key)
        try:
            line, seq = json.loads(data), int(name.split(".")[0])
        except ValueError:
            problems.append(f"{key}: not an audit line (edited or foreign object)")
            prev, expected = hashlib.sha256(data).hexdigest(), expected + 1
            continue
        if seq != expected:
            problems.append(f"{key}: expected line {expected}: line(s) {expected}..{seq - 1} were removed")
        if not isinstance(line, dict) or line.get("seq") != seq:
            problems.append(f"{key}: does not hold line {seq} (edited or replaced)")
        elif line.get("prev") != prev:
            problems.append(f"{key}: previous line's hash does not match (line {seq - 1} edited or removed)")
        prev = hashes[seq] = hashlib.sha256(data).hexdigest()
        expected = seq + 1
    if dsn:
        problems += _against_table(dsn, hashes, repo_url=repo.url)
    return VerifyResult(len(keys), problems)


def _against_table(dsn: str, hashes: dict[int, str], *, repo_url: str) -> list[str]:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT seq, line_sha256 FROM backup_audit WHERE backup_path = %s AND seq > 0", [_redact(repo_url)]
        ).fetchall()
    problems = []
    for seq, sha in sorted(rows):
        if seq not in hashes:
            problems.append(f"line {seq} is in backup_audit but not in the repository (removed)")
        elif sha != hashes[seq]:
            problems.append(f"line {seq} differs from the copy in backup_audit (edited)")
    return problems
