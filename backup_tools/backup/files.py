"""File-bucket backups: documents (S3 bucket or directory) into a repository, incremental, restorable, verifiable.

Layout: `buckets/<name>/<id>/objects/<hash of key>` holds each new or changed document, stored through
objstore.store_object (compressed, and encrypted with a data key per bucket backup when a key file is
given: the same seam as database backups); `buckets/<name>/<id>/manifest.json` (key, size, sha256,
etag, where the stored object is and its own checksums) is written LAST. An object unchanged since the
previous bucket backup (same size and ETag, or same size and sha256 for directories) is not copied
again: its manifest entry points at the object stored by the earlier backup. check_consistency compares
`documents.storage_key` with a bucket's keys (live, or a bucket backup's manifest at a recovery point).
Not handled yet: pruning bucket backups (an object stays needed while any later manifest references it).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

import psycopg
from psycopg import sql

from backup_tools.errors import BackupNotFound, BackupToolsError, DocumentMissing, UsageError
from backup_tools.repo.base import Repository
from backup_tools.repo.buckets import DocumentBucket, SourceObject
from backup_tools.repo.compress import check_codec
from backup_tools.repo.objects import Sealing, drain, new_sealing, open_object, open_sealing, store_object
from backup_tools.repo.policy import enforce
from backup_tools.security.keys import resolve_key_file

logger = logging.getLogger(__name__)

BUCKETS = "buckets"
MANIFEST_NAME = "manifest.json"
Log = Callable[[str], Any]


@dataclass(frozen=True)
class BucketEntry:
    """One document: its key, size, sha256 and ETag, and the stored object (in backup `scope`) holding it."""

    key: str
    size: int
    sha256: str
    etag: str | None
    stored: str
    scope: str
    stored_size: int
    stored_sha256: str
    codec: str


@dataclass(frozen=True)
class BucketManifest:
    """A finished bucket backup; sealings maps each scope (bucket backup id) to its encryption metadata."""

    id: str
    name: str
    source: str
    started_at: datetime
    finished_at: datetime
    parent: str | None
    entries: tuple[BucketEntry, ...]
    sealings: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise to the manifest's JSON form."""
        doc = asdict(self) | {"format": 1}
        doc["started_at"], doc["finished_at"] = self.started_at.isoformat(), self.finished_at.isoformat()
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> BucketManifest:
        """Parse the manifest's JSON form."""
        doc = json.loads(text)
        doc.pop("format", None)
        doc["started_at"], doc["finished_at"] = (datetime.fromisoformat(doc[k]) for k in ("started_at", "finished_at"))
        doc["entries"] = tuple(BucketEntry(**e) for e in doc["entries"])
        return cls(**doc)


@dataclass(frozen=True)
class BucketBackupResult:
    """A bucket backup: its manifest, how many documents were stored anew or reused, bytes read and seconds."""

    manifest: BucketManifest
    copied: int
    reused: int
    vanished: int
    bytes_copied: int
    seconds: float


def _check_name(name: str) -> str:
    if not name or "/" in name or name.startswith(".") or ".." in name:
        raise UsageError(f"bucket backup name {name!r} must be one path segment, e.g. 'documents'")
    return name


def list_bucket_backups(repo: Repository, name: str) -> list[BucketManifest]:
    """Finished bucket backups of one name, oldest first."""
    keys = [k for k in repo.list(f"{BUCKETS}/{_check_name(name)}/") if k.endswith("/" + MANIFEST_NAME)]
    return sorted((BucketManifest.from_json(repo.get_bytes(k)) for k in keys), key=lambda m: (m.started_at, m.id))


def read_bucket_backup(repo: Repository, name: str, backup: str = "latest", *, at: datetime | None = None
                       ) -> BucketManifest:  # fmt: skip
    """One bucket backup: by id, 'latest', or the newest finished at or before `at` (a recovery point)."""
    manifests = list_bucket_backups(repo, name)
    if backup not in ("latest", None):
        found = [m for m in manifests if m.id == backup]
    else:
        found = [m for m in manifests if at is None or m.finished_at <= at][-1:]
    if not found:
        when = f" finished by {at.isoformat()}" if at else ""
        raise BackupNotFound(f"no bucket backup {backup!r} of {name!r}{when} in {repo.url}; "
                             f"run `backup-tools storage list --repo {repo.url}`")  # fmt: skip
    return found[0]


def backup_bucket(source: DocumentBucket, repo: Repository, *, name: str, codec: str = "zstd",
                  key_file: str | os.PathLike[str] | None = None, log: Log = logger.info) -> BucketBackupResult:  # fmt: skip
    """Back up every document; unchanged ones (vs the previous backup of this name) are referenced, not copied."""
    check_codec(codec)
    began, clock = datetime.now(UTC), time.monotonic()
    backup_id = f"{began:%Y%m%dT%H%M%SZ}-bucket-{secrets.token_hex(2)}"
    listing = source.list_objects()
    with repo.lock(f"bucket-{_check_name(name)}"):
        previous = list_bucket_backups(repo, name)[-1:]
        before = {e.key: e for e in previous[0].entries} if previous else {}
        sealing = new_sealing(key_file)
        enforce(repo, sealing.meta if sealing else None, what=f"back up bucket {name}")
        sealings: dict[str, dict[str, Any] | None] = {backup_id: sealing.meta if sealing else None}
        entries, copied, vanished, nbytes = [], 0, 0, 0
        log(f"### Bucket backup {backup_id} of {source.url} ({len(listing)} objects) into {repo.url}")
        for obj in listing:
            old = before.get(obj.key)
            if old is not None and old.size == obj.size:
                same = old.etag == obj.etag if obj.etag and old.etag else old.sha256 == source.sha256(obj.key)
                if same:
                    entries.append(old)
                    sealings[old.scope] = previous[0].sealings.get(old.scope)
                    continue
            stored_key = f"{BUCKETS}/{name}/{backup_id}/objects/{sha256(obj.key.encode()).hexdigest()[:40]}"
            try:
                src = source.open(obj.key)
            except DocumentMissing:  # only the source's "not there": a failing write to repo is never skipped
                log(f"### {obj.key} disappeared during the backup; skipped")
                vanished += 1
                continue
            with src:
                s = store_object(repo, stored_key, src, codec=codec, sealing=sealing, scope=backup_id)
            entries.append(BucketEntry(obj.key, s.plain_size, s.plain_sha256, obj.etag, stored_key, backup_id,
                                       s.size, s.sha256, codec))  # fmt: skip
            copied, nbytes = copied + 1, nbytes + s.plain_size
        manifest = BucketManifest(backup_id, name, source.url, began, datetime.now(UTC),
                                  previous[0].id if previous else None, tuple(entries), sealings)  # fmt: skip
        repo.put_bytes(f"{BUCKETS}/{name}/{backup_id}/{MANIFEST_NAME}", manifest.to_json().encode())  # last
    log(f"### Bucket backup {backup_id} done: {copied} stored, {len(entries) - copied} unchanged")
    return BucketBackupResult(manifest, copied, len(entries) - copied, vanished, nbytes, time.monotonic() - clock)


def _sealings(manifest: BucketManifest, key_file: str | os.PathLike[str] | None) -> dict[str, Sealing | None]:
    return {scope: open_sealing(meta, key_file=key_file) for scope, meta in manifest.sealings.items()}


def _open_entry(repo: Repository, entry: BucketEntry, sealing: Sealing | None):
    return open_object(
        repo, entry.stored, codec=entry.codec, sealing=sealing, scope=entry.scope, size=entry.stored_size,
        sha256=entry.stored_sha256, plain_size=entry.size, plain_sha256=entry.sha256,
    )  # fmt: skip


@dataclass(frozen=True)
class BucketRestoreResult:
    """What a bucket restore wrote: documents restored, documents already identical, bytes."""

    backup_id: str
    restored: int
    unchanged: int
    bytes: int


def restore_bucket(repo: Repository, to: DocumentBucket, *, name: str, backup: str = "latest",
                   key_file: str | os.PathLike[str] | None = None, everything: bool = False,
                   log: Log = logger.info) -> BucketRestoreResult:  # fmt: skip
    """Restore a bucket backup's documents (verified) into a bucket or directory; identical ones are left alone."""
    manifest = read_bucket_backup(repo, name, backup)
    sealings = _sealings(manifest, key_file)
    to.prepare()
    present = {} if everything else {o.key: o for o in to.list_objects()}
    restored = unchanged = nbytes = 0
    log(f"### Restoring bucket backup {manifest.id} ({len(manifest.entries)} documents) into {to.url}")
    for entry in manifest.entries:
        have = present.get(entry.key)
        if _identical(to, have, entry):
            unchanged += 1
            continue
        to.put(entry.key, _open_entry(repo, entry, sealings[entry.scope]))
        restored, nbytes = restored + 1, nbytes + entry.size
    log(f"### Restored {restored} documents, {unchanged} were already identical")
    return BucketRestoreResult(manifest.id, restored, unchanged, nbytes)


def _identical(to: DocumentBucket, have: SourceObject | None, entry: BucketEntry) -> bool:
    if have is None or have.size != entry.size:
        return False
    return bool(have.etag and have.etag == entry.etag) or to.sha256(entry.key) == entry.sha256


@dataclass(frozen=True)
class BucketVerifyResult:
    """Problems found in a bucket backup (empty when good), each naming the document and stored object."""

    backup_id: str
    checked: int
    problems: tuple[str, ...]
    plaintext_checked: bool

    @property
    def ok(self) -> bool:
        """True when every document is present with its checksums."""
        return not self.problems


def verify_bucket_backup(repo: Repository, *, name: str, backup: str = "latest",
                         key_file: str | os.PathLike[str] | None = None, log: Log = logger.info) -> BucketVerifyResult:  # fmt: skip
    """Read every stored document: stored sha256/size always; decrypted+decompressed sha256 when readable."""
    manifest = read_bucket_backup(repo, name, backup)
    keyless = all(m is None or m.get("wrapping") != "aws-kms" for m in manifest.sealings.values())
    plaintext = not any(manifest.sealings.values()) or not keyless or resolve_key_file(key_file) is not None
    sealings = _sealings(manifest, key_file) if plaintext else {}  # without a key: stored checksums only
    problems: list[str] = []
    log(f"### Verifying bucket backup {manifest.id}: {len(manifest.entries)} documents")
    for entry in manifest.entries:
        try:
            if plaintext:
                drain(_open_entry(repo, entry, sealings[entry.scope]))
            else:
                drain(repo.open_read(entry.stored, sha256=entry.stored_sha256, size=entry.stored_size))
        except BackupToolsError as e:
            problems.append(f"document {entry.key} (stored as {entry.stored}): {e}")
    return BucketVerifyResult(manifest.id, len(manifest.entries), tuple(problems), plaintext)


@dataclass(frozen=True)
class ConsistencyResult:
    """Database rows vs bucket objects at one recovery point: orphans both ways, counts and the first few keys."""

    rows: int
    objects: int
    missing_objects: int  # rows whose storage key has no object
    orphan_objects: int  # objects no row refers to
    first_missing: tuple[str, ...]
    first_orphans: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every row has its object and every object its row."""
        return not self.missing_objects and not self.orphan_objects


def check_consistency(conn: psycopg.Connection, object_keys: Iterable[str], *, table: str = "documents",
                      column: str = "storage_key", schema: str = "public", limit: int = 20) -> ConsistencyResult:  # fmt: skip
    """Compare `schema.table.column` (e.g. documents.storage_key) with a bucket's keys (listed or from a manifest)."""
    query = sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL").format(
        sql.Identifier(column), sql.Identifier(schema, table), sql.Identifier(column)
    )
    try:
        rows = {str(r[0]) for r in conn.execute(query)}
    except psycopg.Error as e:
        raise UsageError(f"could not read {schema}.{table}.{column} ({e.diag.message_primary or e}); "
                         "pass the table and column that hold the object keys") from e  # fmt: skip
    objects = set(object_keys)
    missing, orphans = sorted(rows - objects), sorted(objects - rows)
    return ConsistencyResult(len(rows), len(objects), len(missing), len(orphans), tuple(missing[:limit]),
                             tuple(orphans[:limit]))  # fmt: skip
