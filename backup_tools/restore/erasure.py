"""GDPR erasure that survives a restore: a ledger of erasure requests kept outside the backups, and its replay.

The ledger is a repository URL of its own (file:///dir or s3://bucket/prefix, never the backup repository):
one object per request, `erasure/<requested-at>-<id>.json`, holding the subject as an HMAC-SHA256 under the
ledger key (the clear identifier is never stored) and the tables/columns that identify the subject. After a
restore, `replay` deletes every row whose identifying column hashes to an erased subject, idempotently, and
reports what it removed. Rows are hashed on the client, so the key never reaches the server or its logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_tools.errors import BackupToolsError, UsageError

PREFIX = "erasure"


@dataclass(frozen=True)
class Target:
    """A table whose rows belong to a subject when `column` holds the subject's identifier."""

    table: str
    column: str


@dataclass(frozen=True)
class ErasureConfig:
    """The team's erasure template: the ledger key and where a subject's data lives."""

    key: bytes = field(repr=False)
    targets: tuple[Target, ...]


def load_erasure_config(path: Path) -> ErasureConfig:
    """Read [erasure] (key_file, [[erasure.targets]] table/column) from a TOML file."""
    from backup_tools.config import load_pgdrill_section
    from backup_tools.security.keys import load_key_file

    doc = load_pgdrill_section(path, "erasure", what="erasure config") or {}
    targets = tuple(
        Target(str(t["table"]), str(t["column"])) for t in doc.get("targets", []) if "table" in t and "column" in t
    )
    if not targets or len(targets) != len(doc.get("targets", [])):
        raise UsageError(
            f"{path}: [[erasure.targets]] needs table and column in each entry (which rows are a subject's)"
        )
    if not doc.get("key_file"):
        raise UsageError(f"{path}: [erasure] key_file is missing (the HMAC key; create one with backup-tools keygen)")
    key_file = Path(doc["key_file"])
    return ErasureConfig(load_key_file(key_file if key_file.is_absolute() else path.parent / key_file).key, targets)


def subject_hash(key: bytes, subject: str) -> str:
    """The keyed hash of a subject identifier (what the ledger stores instead of it)."""
    return hmac.new(key, subject.strip().encode(), hashlib.sha256).hexdigest()


def record(ledger_url: str, config: ErasureConfig, subject: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Append an erasure request to the ledger; returns the stored entry (no clear identifier in it)."""
    from backup_tools.repo.base import open_repository

    now = now or datetime.now(UTC)
    entry = {"id": uuid.uuid4().hex[:12], "requested_at": now.isoformat(), "subject_hmac": subject_hash(config.key, subject),
             "key_id": hashlib.sha256(config.key).hexdigest()[:16],
             "targets": [{"table": t.table, "column": t.column} for t in config.targets]}  # fmt: skip
    ledger = open_repository(ledger_url)
    ledger.put_bytes(f"{PREFIX}/{now:%Y%m%dT%H%M%S%fZ}-{entry['id']}.json", json.dumps(entry, sort_keys=True).encode())
    return entry


def read_ledger(ledger_url: str) -> list[dict[str, Any]]:
    """Every request in the ledger, oldest first; an unreachable ledger raises (a restore must not pass without it)."""
    from backup_tools.repo.base import FileRepository, open_repository

    ledger = open_repository(ledger_url)
    if isinstance(ledger, FileRepository) and not ledger.root.is_dir():
        raise BackupToolsError(f"erasure ledger {ledger_url} does not exist; a restore is not ready without its replay")
    try:
        return [json.loads(ledger.get_bytes(k)) for k in ledger.list(f"{PREFIX}/")]
    except BackupToolsError as e:
        raise BackupToolsError(
            f"erasure ledger {ledger_url} is unreachable ({e}); the restored data is not ready"
        ) from e


@dataclass(frozen=True)
class ReplayResult:
    """Rows removed per table by a replay, and the requests it applied."""

    requests: int
    removed: dict[str, int]


def replay(ledger_url: str, config: ErasureConfig, dsn: str, *, log: Callable[[str], Any] = print) -> ReplayResult:
    """Delete, in one transaction, every row of the targets whose identifier hashes to an erased subject."""
    import psycopg
    from psycopg import sql

    entries = read_ledger(ledger_url)
    key_id = hashlib.sha256(config.key).hexdigest()[:16]
    if any(e.get("key_id") != key_id for e in entries):
        raise UsageError("the erasure ledger was written with another key; give replay the ledger's key file")
    erased = {e["subject_hmac"] for e in entries}
    wanted = [(t.table, t.column) for t in config.targets]  # config order: children before parents (foreign keys)
    targets = list(dict.fromkeys(wanted + [(t["table"], t["column"]) for e in entries for t in e["targets"]]))
    removed: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        for table, column in targets:
            name = sql.Identifier(*table.split(".", 1))
            rows = conn.execute(
                sql.SQL("SELECT ctid, {}::text FROM {}").format(sql.Identifier(column), name)
            ).fetchall()
            doomed = [ctid for ctid, value in rows if value is not None and subject_hash(config.key, value) in erased]
            if doomed:
                conn.execute(sql.SQL("DELETE FROM {} WHERE ctid = ANY(%s::tid[])").format(name), [doomed])
            removed[table] = len(doomed)
            log(f"### Erasure replay: {len(doomed)} row(s) removed from {table}")
    return ReplayResult(len(entries), removed)

