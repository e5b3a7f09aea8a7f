"""Key rotation: re-wrap every data key in a repository with a new key file or KMS key (`backup-tools rekey`).

Wrapped data keys live in three places: each backup's catalog (`backups/<id>/catalog.json`, field
`encryption`), the header of each self-describing WAL object (`wal/<name>`), and each bucket backup's
manifest (`buckets/<name>/<id>/manifest.json`, field `sealings`). Data is never re-encrypted: the data key
and its data_key_id stay, only wrapping/key_id/wrapped_key change (keys.rewrap). Each object is rewritten
whole with one atomic overwrite (file://: temp file + rename; S3: one PUT replaces the object), so at every
moment it is wrapped by the old key or by the new one, never by neither. Objects the new key already wraps
are skipped: a killed rekey resumes when run again with the same options. Runs under the repository lock.

Afterwards only the new key opens the repository. rekey first records the new key id as the repository's
encryption policy (encpolicy.py): from then on writes with the old key are refused (exit 3), so switch
archive_command's key file right after starting the rekey (PostgreSQL keeps retrying the refused WAL
files, which stay in pg_wal until then). Copies in other repositories and earlier object versions in a
versioned bucket keep the old wrapping until they are rekeyed or expire.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backup_tools.catalog import BACKUPS, CATALOG_NAME, WAL, BackupRecord
from backup_tools.errors import BackupToolsError, EncryptionKeyError
from backup_tools.repo.base import Repository
from backup_tools.repo.objects import ENVELOPE_MAGIC, read_envelope
from backup_tools.repo.objstreams import Chain
from backup_tools.repo.policy import FIELD as POLICY
from backup_tools.repo.policy import read_identity, record_policy
from backup_tools.security.keys import KeyWrapper, KmsKey, LocalKey, load_key_file, rewrap
from backup_tools.streams import CHUNK

logger = logging.getLogger(__name__)

BUCKETS, BUCKET_MANIFEST = "buckets", "manifest.json"
Log = Callable[[str], Any]


@dataclass(frozen=True)
class RekeyResult:
    """Objects re-wrapped (or, in a dry run, to re-wrap), already wrapped by the new key, and unencrypted."""

    new_key_id: str
    changed: tuple[str, ...]
    already: tuple[str, ...]
    plaintext: tuple[str, ...]
    dry_run: bool


@dataclass
class _OldKeys:
    """Unwrappers for the current wrapping: the old key file (loaded once), or KMS by the recorded key id."""

    key_file: str | os.PathLike[str] | None
    kms_client: Any = None
    _local: LocalKey | None = field(default=None, init=False)

    def for_meta(self, meta: dict[str, Any]) -> KeyWrapper:
        """The wrapper that opens this metadata's data key."""
        if meta.get("wrapping") == "aws-kms":
            return KmsKey(meta.get("key_id"), client=self.kms_client)
        if self._local is None:
            self._local = load_key_file(self.key_file)
        return self._local


def new_key_id(wrapper: KeyWrapper) -> str:
    """The key id the new wrapper records (a KMS alias or id is resolved to the key's ARN)."""
    if isinstance(wrapper, KmsKey):
        return wrapper.arn()
    return wrapper.key_id  # type: ignore[attr-defined]


def _rewrapped(meta: dict[str, Any], old: _OldKeys, new: KeyWrapper, where: str) -> dict[str, Any]:
    try:
        return rewrap(meta, old.for_meta(meta), new)
    except EncryptionKeyError as e:
        raise EncryptionKeyError(
            f"{where}: {e}; nothing more was changed (objects re-wrapped so far stay wrapped by the new key): "
            "rerun with the key that wraps it"
        ) from e


def rekey(
    repo: Repository,
    *,
    new: KeyWrapper,
    key_file: str | os.PathLike[str] | None = None,
    kms_client: Any = None,
    dry_run: bool = False,
    log: Log = logger.info,
) -> RekeyResult:
    """Re-wrap every backup's, WAL object's and bucket backup's data key with `new`; see the module docstring."""
    target = new_key_id(new)
    old = _OldKeys(key_file, kms_client)
    changed: list[str] = []
    already: list[str] = []
    plaintext: list[str] = []
    verb = "Would re-wrap" if dry_run else "Re-wrapping"

    def handle(key: str, meta: dict[str, Any] | None, write: Callable[[dict[str, Any]], None]) -> None:
        if not meta:
            plaintext.append(key)
            return
        if meta.get("wrapping") == new.wrapping and meta.get("key_id") == target:
            already.append(key)
            return
        wrapped = _rewrapped(meta, old, new, key)  # in a dry run too: proves the old key opens it
        log(f"### {verb} {key}: {meta.get('wrapping')} {meta.get('key_id')} -> {new.wrapping} {target}")
        if not dry_run:
            write(wrapped)
        changed.append(key)

    repo.list(f"{BACKUPS}/")  # a mistyped repository fails here, before lock() would create it
    with repo.lock():
        identity = read_identity(repo)
        if not dry_run and (identity or {}).get(POLICY) != target:  # first: from now on writes need the new key
            record_policy(repo, target, source=f"rekey to {new.wrapping}", identity=identity)
        for key in repo.list(f"{BACKUPS}/"):
            if key.endswith("/" + CATALOG_NAME):
                record = BackupRecord.from_json(repo.get_bytes(key))
                handle(key, record.encryption, lambda m, r=record: repo.write_catalog(r.with_changes(encryption=m)))
        for key in repo.list(f"{BUCKETS}/"):
            if key.endswith("/" + BUCKET_MANIFEST):
                _rekey_manifest(repo, key, handle)
        for key in repo.list(f"{WAL}/"):
            if not key.rsplit("/", 1)[-1].startswith("."):
                header, raw = read_envelope(repo, key)
                raw.close()
                handle(key, header.get("encryption"), lambda m, k=key: _rewrite_envelope(repo, k, m))
    log(
        f"### {'Dry run: would re-wrap' if dry_run else 'Re-wrapped'} {len(changed)} object(s) to {new.wrapping} "
        f"{target}; {len(already)} already wrapped by it, {len(plaintext)} unencrypted"
    )
    return RekeyResult(target, tuple(changed), tuple(already), tuple(plaintext), dry_run)


def _rekey_manifest(repo: Repository, key: str, handle: Callable[..., None]) -> None:
    """Re-wrap each scope's data key of a bucket backup manifest; the manifest is rewritten once, atomically."""
    doc = json.loads(repo.get_bytes(key))
    sealings: dict[str, Any] = doc.get("sealings") or {}
    pending: dict[str, dict[str, Any]] = {}
    for scope, meta in sorted(sealings.items()):
        handle(f"{key} ({scope})", meta, lambda m, s=scope: pending.__setitem__(s, m))
    if pending:
        doc["sealings"] = sealings | pending
        repo.put_bytes(key, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), overwrite=True)


def _rewrite_envelope(repo: Repository, key: str, meta: dict[str, Any]) -> None:
    """Replace a WAL object's header with one holding the new wrapping; the sealed payload is copied verbatim."""
    header, raw = read_envelope(repo, key)  # re-read: the payload streams from here, verified at EOF
    head = ENVELOPE_MAGIC + json.dumps(header | {"encryption": meta}, sort_keys=True).encode() + b"\n"
    try:
        with raw:
            repo.put_stream(key, io.BufferedReader(Chain(head, raw), CHUNK), overwrite=True)  # type: ignore[arg-type]
    except BackupToolsError as e:
        raise type(e)(f"re-wrapping {key} failed, the object is unchanged: {e}") from e
