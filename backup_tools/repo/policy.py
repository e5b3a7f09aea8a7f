"""A repository's encryption policy, recorded in identity.json at its first write; writes that break it are refused.

The policy is one string in identity.json's "encryption" field: the key id that wraps every data key
("kf-…" for a key file, the ARN for KMS), or "plaintext". Every write that creates backup or WAL objects
(backup, wal-push, storage backup) calls `enforce` first: a keyless write into an encrypted repository,
a write with another key id, or an encrypted write into a plaintext repository raises EncryptionKeyError
(exit 3) before anything is stored. Only `rekey` changes the policy (`record_policy`).

Repositories made before the policy existed have no "encryption" field: the first write infers it from
what is stored (the newest good backup's key id, else the newest WAL object's, else the newest bucket
backup's) and records it; an empty repository takes the policy of its first write.
`breaches` lists stored objects whose encryption differs from the policy (for `check`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from backup_tools.catalog import IDENTITY_KEY, WAL, BackupRecord, clean_system_identifier
from backup_tools.errors import (
    BackupToolsError,
    DocumentMissing,
    EncryptionKeyError,
    IntegrityCheckFailed,
    RepositoryError,
)
from backup_tools.repo.base import FileRepository, Repository
from backup_tools.repo.objects import read_envelope
from backup_tools.security.keys import KEY_FILE_ENV

PLAINTEXT = "plaintext"
FIELD = "encryption"
BUCKET_MANIFEST = "manifest.json"


def read_identity(repo: Repository) -> dict[str, Any] | None:
    """The repository's identity.json (one read), None when it has none yet."""
    try:
        with repo.open_raw(IDENTITY_KEY) as f:
            raw = f.read()
    except DocumentMissing:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise IntegrityCheckFailed(f"{IDENTITY_KEY} in {repo.url} is not a JSON object (damaged); restore it from a copy")
    if "system_identifier" in doc:  # also reads "b'7714…'", written by versions that stored SQL_ASCII bytes' repr
        doc["system_identifier"] = clean_system_identifier(doc["system_identifier"])
    return doc


def write_identity(repo: Repository, doc: dict[str, Any], *, replace: bool) -> None:
    """Write identity.json (replace=False: only if absent, so two first writers cannot both claim it)."""
    repo.put_bytes(IDENTITY_KEY, (json.dumps(doc, indent=2) + "\n").encode(), overwrite=replace)


def policy_of(meta: dict[str, Any] | None) -> str:
    """The policy an object's encryption metadata satisfies: its wrapping key id, or "plaintext"."""
    return str(meta["key_id"]) if meta else PLAINTEXT


def infer_policy(repo: Repository) -> tuple[str, str] | None:
    """(policy, what it was read from) implied by stored objects, None for an empty repository."""
    if isinstance(repo, FileRepository) and not repo.root.is_dir():
        return None  # not created yet: the first write creates it, as before
    good = [r for r in repo.list_backups() if r.is_good]
    if good:
        return policy_of(good[-1].encryption), f"backup {good[-1].id}"
    names = [k for k in repo.list(f"{WAL}/") if not k.rsplit("/", 1)[-1].startswith(".")]
    if names:
        header, raw = read_envelope(repo, names[-1])
        raw.close()
        return policy_of(header.get("encryption")), names[-1]
    manifests = [k for k in repo.list("buckets/") if k.endswith("/" + BUCKET_MANIFEST)]
    if manifests:
        doc = json.loads(repo.get_bytes(max(manifests, key=lambda k: k.rsplit("/", 2)[-2])))
        return policy_of((doc.get("sealings") or {}).get(doc.get("id"))), manifests[-1]
    return None


def record_policy(repo: Repository, policy: str, *, source: str, identity: dict[str, Any] | None = None) -> None:
    """Set the policy in identity.json (creating it if absent)."""
    doc = dict(identity or {}) | {FIELD: policy, "encryption_recorded_at": datetime.now(UTC).isoformat(),
                                  "encryption_source": source}  # fmt: skip
    write_identity(repo, doc, replace=identity is not None)


def enforce(repo: Repository, meta: dict[str, Any] | None, *, what: str,
            identity: dict[str, Any] | None | bool = False) -> str:  # fmt: skip
    """Refuse (EncryptionKeyError, exit 3) a write sealed by meta that breaks the policy; return the policy.

    identity: identity.json as the caller already read it (None: absent); False: read it here.
    """
    doc = read_identity(repo) if identity is False else identity
    assert not isinstance(doc, bool)
    policy = (doc or {}).get(FIELD)
    if policy is None:
        inferred = infer_policy(repo)
        policy, source = inferred if inferred else (policy_of(meta), f"first write ({what})")
        try:
            record_policy(repo, policy, source=source, identity=doc)
        except RepositoryError:  # another first writer created identity.json meanwhile: obey what it recorded
            again = read_identity(repo)
            if again is None or again.get(FIELD) is None:
                raise
            policy = again[FIELD]
    mine = policy_of(meta)
    if mine == policy:
        return policy
    if policy == PLAINTEXT:
        raise EncryptionKeyError(
            f"{repo.url} holds unencrypted backups (encryption policy: plaintext, in {IDENTITY_KEY}); refusing to "
            f"{what} encrypted with key id {mine}: use a new repository for encrypted backups, or adopt the key "
            f"with `backup-tools rekey --repo {repo.url} --new-key-file FILE` first"
        )
    if mine == PLAINTEXT:
        raise EncryptionKeyError(
            f"{repo.url} is encrypted (policy: key id {policy}, in {IDENTITY_KEY}); refusing to {what} without "
            f"a key, which would store plaintext: pass that key with --key-file or {KEY_FILE_ENV}"
        )
    raise EncryptionKeyError(
        f"{repo.url} is encrypted with key id {policy} (its policy, in {IDENTITY_KEY}); refusing to {what} "
        f"with key id {mine}: pass the repository's key, or change the policy with `backup-tools rekey` first"
    )


def breaches(repo: Repository, records: list[BackupRecord], wal_keys: list[str]) -> tuple[str | None, list[str]]:
    """(policy, objects that break it): every catalog, and the WAL headers of wal_keys (None: no policy yet)."""
    doc = read_identity(repo)
    policy = (doc or {}).get(FIELD)
    if policy is None:
        inferred = infer_policy(repo)
        if inferred is None:
            return None, []
        policy = inferred[0]
    bad = [f"backup {r.id} ({policy_of(r.encryption)})" for r in records if policy_of(r.encryption) != policy]
    for key in wal_keys:
        try:
            header, raw = read_envelope(repo, key)
        except DocumentMissing:
            continue  # pruned meanwhile
        except BackupToolsError:
            bad.append(f"{key} (unreadable header)")
            continue
        raw.close()
        if (found := policy_of(header.get("encryption"))) != policy:
            bad.append(f"{key} ({found})")
    return policy, bad
