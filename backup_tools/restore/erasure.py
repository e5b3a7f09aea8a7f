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
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_tools.errors import BackupToolsError, UsageError

logger = logging.getLogger(__name__)
Log = Callable[[str], Any]  # where progress lines go: the CLI passes its stderr writer, else logging

PREFIX = "erasure"


@dataclass(frozen=True)
class Target:
    """Rows of `table` that belong to a subject: `column` holds the identifier (by="identifier") or the subject
    row's key (by="key", needs [erasure.subject]); they are deleted, or the column set to NULL (action="null")."""

    table: str
    column: str
    by: str = "identifier"
    action: str = "delete"
    bucket_key_column: str | None = None  # the rows' document keys: those objects are deleted from --bucket too


@dataclass(frozen=True)
class Subject:
    """The table naming subjects: `column` is the identifier a request gives, `key` what other tables reference."""

    table: str
    column: str
    key: str


@dataclass(frozen=True)
class ErasureConfig:
    """The team's erasure template: the ledger key and where a subject's data lives."""

    key: bytes = field(repr=False)
    targets: tuple[Target, ...]
    subject: Subject | None = None


def load_erasure_config(path: Path) -> ErasureConfig:
    """Read [erasure] (key_file, optional [erasure.subject], [[erasure.targets]]) from a TOML file."""
    from backup_tools.config import load_pgdrill_section
    from backup_tools.security.keys import load_key_file

    doc = load_pgdrill_section(path, "erasure", what="erasure config") or {}
    listed = doc.get("targets", [])
    targets = tuple(
        Target(
            str(t["table"]),
            str(t["column"]),
            str(t.get("by", "identifier")),
            str(t.get("action", "delete")),
            t.get("bucket_key_column"),
        )  # fmt: skip
        for t in listed
        if "table" in t and "column" in t
    )
    if not targets or len(targets) != len(listed):
        raise UsageError(
            f"{path}: [[erasure.targets]] needs table and column in each entry (which rows are a subject's)"
        )
    subj = doc.get("subject")
    if subj is not None and not all(k in subj for k in ("table", "column", "key")):
        raise UsageError(f"{path}: [erasure.subject] needs table, column (the identifier) and key")
    subject = Subject(str(subj["table"]), str(subj["column"]), str(subj["key"])) if subj else None
    for t in targets:
        if t.by not in ("identifier", "key") or t.action not in ("delete", "null") or (t.by == "key" and not subject):
            raise UsageError(
                f"{path}: target {t.table}: by = identifier|key (key needs [erasure.subject]), action = delete|null"
            )
    if not doc.get("key_file"):
        raise UsageError(f"{path}: [erasure] key_file is missing (the HMAC key; create one with backup-tools keygen)")
    key_file = Path(doc["key_file"])
    key = load_key_file(key_file if key_file.is_absolute() else path.parent / key_file).key
    return ErasureConfig(key, targets, subject)


def subject_hash(key: bytes, subject: str) -> str:
    """The keyed hash of a subject identifier (what the ledger stores instead of it)."""
    return hmac.new(key, subject.strip().encode(), hashlib.sha256).hexdigest()


def record(ledger_url: str, config: ErasureConfig, subject: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Append an erasure request to the ledger; returns the stored entry (no clear identifier in it)."""
    from backup_tools.repo import open_repository

    now = now or datetime.now(UTC)
    entry = {"id": uuid.uuid4().hex[:12], "requested_at": now.isoformat(), "subject_hmac": subject_hash(config.key, subject),
             "key_id": hashlib.sha256(config.key).hexdigest()[:16],
             "targets": [asdict(t) for t in config.targets],
             "subject": asdict(config.subject) if config.subject else None}  # fmt: skip
    ledger = open_repository(ledger_url)
    ledger.put_bytes(f"{PREFIX}/{now:%Y%m%dT%H%M%S%fZ}-{entry['id']}.json", json.dumps(entry, sort_keys=True).encode())
    return entry


def read_ledger(ledger_url: str) -> list[dict[str, Any]]:
    """Every request in the ledger, oldest first; an unreachable ledger raises (a restore must not pass without it)."""
    from backup_tools.repo import open_repository

    ledger = open_repository(ledger_url)
    if (local := ledger.local_path("")) is not None and not local.is_dir():
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


def replay(
    ledger_url: str, config: ErasureConfig, dsn: str, *, bucket: str | None = None, log: Log = logger.info
) -> ReplayResult:
    """Delete, in one transaction, every row of the targets whose identifier hashes to an erased subject (and, for
    targets with bucket_key_column, their documents from `bucket` first, so a failure leaves the rows to retry)."""
    import psycopg
    from psycopg import sql

    entries = read_ledger(ledger_url)
    key_id = hashlib.sha256(config.key).hexdigest()[:16]
    if any(e.get("key_id") != key_id for e in entries):
        raise UsageError("the erasure ledger was written with another key; give replay the ledger's key file")
    erased = {e["subject_hmac"] for e in entries}
    targets = list(dict.fromkeys([*config.targets, *(Target(**t) for e in entries for t in e["targets"])]))
    if config.subject is not None:  # the subject's own row goes last, after every row referencing it
        targets.append(Target(config.subject.table, config.subject.key, "key"))
    if any(t.bucket_key_column for t in targets) and not bucket:
        raise UsageError("the erasure targets name documents (bucket_key_column): give the document bucket (--bucket)")
    removed: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        keys = _subject_keys(conn, config, erased)
        for t in targets:
            name, column = sql.Identifier(*t.table.split(".", 1)), sql.Identifier(t.column)
            if t.by == "key":
                where, params = sql.SQL("{}::text = ANY(%s)").format(column), [keys]
            else:
                rows = conn.execute(sql.SQL("SELECT ctid, {}::text FROM {}").format(column, name)).fetchall()
                doomed = [
                    ctid for ctid, value in rows if value is not None and subject_hash(config.key, value) in erased
                ]
                where, params = sql.SQL("ctid = ANY(%s::tid[])"), [doomed]
            if t.bucket_key_column and bucket:
                removed[f"{bucket} objects"] = removed.get(f"{bucket} objects", 0) + _delete_documents(
                    conn, t, where, params, bucket, log=log)  # fmt: skip
            if t.action == "null":
                label, verb = f"{t.table}.{t.column}", sql.SQL("UPDATE {} SET {} = NULL WHERE ").format(name, column)
            else:
                label, verb = t.table, sql.SQL("DELETE FROM {} WHERE ").format(name)
            count = max(conn.execute(verb + where, params).rowcount, 0)
            removed[label] = removed.get(label, 0) + count
            log(
                f"### Erasure replay: {count} row(s) {'set to NULL in' if t.action == 'null' else 'removed from'} {label}"
            )
    return ReplayResult(len(entries), removed)


def _subject_keys(conn: Any, config: ErasureConfig, erased: set[str]) -> list[str]:
    """The keys (as text) of the subject rows whose identifier hashes to an erased subject."""
    from psycopg import sql

    subj = config.subject
    if subj is None:
        return []
    query = sql.SQL("SELECT {}::text, {}::text FROM {}").format(
        sql.Identifier(subj.key), sql.Identifier(subj.column), sql.Identifier(*subj.table.split(".", 1))
    )
    return [
        k
        for k, value in conn.execute(query).fetchall()
        if value is not None and subject_hash(config.key, value) in erased
    ]


def _delete_documents(conn: Any, t: Target, where: Any, params: list[Any], bucket: str, *, log: Log) -> int:
    """Delete the documents the doomed rows of a target point to; returns how many keys were deleted."""
    from psycopg import sql

    from backup_tools.repo.buckets import open_bucket

    query = sql.SQL("SELECT {}::text FROM {} WHERE ").format(
        sql.Identifier(t.bucket_key_column), sql.Identifier(*t.table.split(".", 1))
    )
    keys = [k for (k,) in conn.execute(query + where, params).fetchall() if k]
    store = open_bucket(bucket)
    for key in keys:
        store.delete(key)
    log(f"### Erasure replay: {len(keys)} document(s) of {t.table} deleted from {bucket}")
    return len(keys)
