"""Envelope keys: a random data key per backup, wrapped by a local key file or by AWS KMS.

Key file (`backup-tools keygen > FILE`): 32 random bytes, standard base64 with padding, on one line.
Its key id is "kf-" + the first 16 hex digits of SHA-256("pgdrill key id v1\\0" + key): it identifies the
key without revealing it. When no path is given, the key file is taken from $PGDRILL_KEY_FILE.

BackupRecord.encryption (JSON, never holds key material in the clear):

    {"format": 1, "algorithm": "AES-256-GCM-chunked-v1", "data_key_id": "dk-<16 hex>",
     "wrapping": "keyfile" | "aws-kms", "key_id": "kf-<16 hex>" | "<KMS key ARN>",
     "wrapped_key": "<base64>"}

"data_key_id" is random, chosen with the data key, and never changes: it is bound into every encrypted
chunk, so `rewrap` (key rotation) only replaces wrapping/key_id/wrapped_key. A key-file wrap is
nonce(12) + AES-256-GCM(key file key, data key) with associated data = wrapping label, key id and data
key id; a KMS wrap is KMS's ciphertext blob with the encryption context {"pgdrill:purpose":
"backup-data-key", "pgdrill:data_key_id": ...}.

Errors: a missing, unreadable or malformed key file, a key file with another key id than the backup's,
or a KMS key that cannot be used raise EncryptionKeyError (exit code 3). A key-file wrap that fails
authentication although the key ids match means the catalog was altered: IntegrityCheckFailed. KMS cannot
tell a wrong key from an altered blob, so any KMS refusal is an EncryptionKeyError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backup_tools.errors import EncryptionKeyError, IntegrityCheckFailed, UsageError

KEY_FILE_ENV = "PGDRILL_KEY_FILE"
KEY_BYTES = 32
META_FORMAT = 1
ALGORITHM = "AES-256-GCM-chunked-v1"
_META_FIELDS = ("format", "algorithm", "data_key_id", "wrapping", "key_id", "wrapped_key")
_KMS_KEY_ERRORS = {
    "AccessDeniedException": "access to the KMS key is denied; check the IAM policy of the key and caller",
    "DisabledException": "the KMS key is disabled; enable it (or restore from a copy wrapped by another key)",
    "IncorrectKeyException": "the data key was wrapped by another KMS key",
    "InvalidCiphertextException": "KMS refused the wrapped data key (another key, or altered metadata)",
    "KMSInvalidStateException": "the KMS key is pending deletion or unavailable; cancel the deletion",
    "NotFoundException": "the KMS key does not exist in this account/region; check the region and key id",
}


class KeyWrapper(Protocol):
    """Wraps and unwraps data keys; `wrapping` names the scheme recorded in the metadata."""

    wrapping: str

    def new_data_key(self, *, context: dict[str, str]) -> tuple[bytes, bytes, str]:
        """Return (data key, wrapped data key, key id)."""

    def wrap(self, data_key: bytes, *, context: dict[str, str]) -> tuple[bytes, str]:
        """Return (wrapped data key, key id)."""

    def unwrap(self, wrapped: bytes, *, key_id: str, context: dict[str, str]) -> bytes:
        """Return the data key, raising EncryptionKeyError if this is not the key that wrapped it."""


def generate_key_file_text() -> str:
    """Return a new key file's contents: 32 random bytes as base64 on one line."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii") + "\n"


def key_file_id(key: bytes) -> str:
    """Return the public id of a key-file key (a short hash; reveals nothing usable)."""
    return "kf-" + hashlib.sha256(b"pgdrill key id v1\0" + key).hexdigest()[:16]


def resolve_key_file(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the key file path given, else $PGDRILL_KEY_FILE, else None."""
    if path is not None and str(path) != "":
        return Path(path)
    env = os.environ.get(KEY_FILE_ENV, "")
    return Path(env) if env else None


@dataclass(frozen=True)
class LocalKey:
    """A key-file key; its repr shows the id and path, never the key."""

    key: bytes = field(repr=False)
    key_id: str
    path: Path | None = None
    wrapping: str = "keyfile"

    @classmethod
    def from_bytes(cls, key: bytes, *, path: Path | None = None) -> LocalKey:
        """Build from 32 raw key bytes."""
        if len(key) != KEY_BYTES:
            raise EncryptionKeyError(f"a key must be {KEY_BYTES} bytes; create one with `backup-tools keygen`")
        return cls(key=key, key_id=key_file_id(key), path=path)

    def _aad(self, key_id: str, context: dict[str, str]) -> bytes:
        items = [self.wrapping, key_id, *(f"{k}={v}" for k, v in sorted(context.items()))]
        return b"".join(len(b).to_bytes(4, "big") + b for b in (s.encode() for s in items))

    def new_data_key(self, *, context: dict[str, str]) -> tuple[bytes, bytes, str]:
        data_key = secrets.token_bytes(KEY_BYTES)
        wrapped, key_id = self.wrap(data_key, context=context)
        return data_key, wrapped, key_id

    def wrap(self, data_key: bytes, *, context: dict[str, str]) -> tuple[bytes, str]:
        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(self.key).encrypt(nonce, data_key, self._aad(self.key_id, context)), self.key_id

    def unwrap(self, wrapped: bytes, *, key_id: str, context: dict[str, str]) -> bytes:
        if key_id != self.key_id:
            where = f" ({self.path})" if self.path else ""
            raise EncryptionKeyError(
                f"backup encrypted with key id {key_id}, you gave key id {self.key_id}{where}; "
                f"pass the key file that was used for the backup with --key-file or {KEY_FILE_ENV}"
            )
        try:
            return AESGCM(self.key).decrypt(wrapped[:12], wrapped[12:], self._aad(key_id, context))
        except (InvalidTag, ValueError) as e:
            raise IntegrityCheckFailed(
                f"the wrapped data key for key id {key_id} failed authentication although the key matches: "
                "the catalog's encryption metadata was altered; restore the catalog from another copy"
            ) from e


def load_key_file(path: str | os.PathLike[str] | None = None) -> LocalKey:
    """Read a key file (default $PGDRILL_KEY_FILE), raising EncryptionKeyError saying what is wrong."""
    resolved = resolve_key_file(path)
    if resolved is None:
        raise EncryptionKeyError(f"no key file given; pass --key-file FILE or set {KEY_FILE_ENV}")
    hint = "create one with `backup-tools keygen > FILE`, or pass the file used for the backup"
    try:
        with open(resolved, "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError as e:
        raise EncryptionKeyError(f"key file {resolved} does not exist; {hint}") from e
    except OSError as e:
        raise EncryptionKeyError(
            f"cannot read key file {resolved}: {e.strerror}; check that it is a file readable by this user (mode 0600)"
        ) from e
    lines = raw.decode("ascii", errors="replace").strip().splitlines()
    if len(lines) != 1:
        found = "it is empty" if not lines else f"found {len(lines)} lines"
        raise EncryptionKeyError(
            f"key file {resolved} is malformed: expected one line of base64, {found}; {hint}"
        ) from None
    try:
        key = base64.b64decode(lines[0].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionKeyError(f"key file {resolved} is malformed: its line is not valid base64; {hint}") from None
    if len(key) != KEY_BYTES:
        raise EncryptionKeyError(
            f"key file {resolved} is malformed: it holds {len(key)} bytes, a key has {KEY_BYTES}; {hint}"
        )
    return LocalKey.from_bytes(key, path=resolved)


class KmsKey:
    """An AWS KMS key (id, alias or ARN) used through boto3; key_id may be None when only unwrapping."""

    wrapping = "aws-kms"

    def __init__(self, key_id: str | None = None, *, client: Any = None):
        self.key_id = key_id
        self._client = client

    def __repr__(self) -> str:
        return f"KmsKey({self.key_id!r})"

    @property
    def client(self) -> Any:
        """The boto3 KMS client (created on first use from the environment's region/endpoint/credentials)."""
        if self._client is None:
            import boto3

            self._client = boto3.client("kms")
        return self._client

    def _call(self, op: str, key_id: str | None, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, op)(**({"KeyId": key_id} if key_id else {}), **kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            why = _KMS_KEY_ERRORS.get(code, f"KMS {op} failed with {code or 'an error'}")
            raise EncryptionKeyError(f"KMS key {key_id}: {why}") from e
        except BotoCoreError as e:
            raise EncryptionKeyError(
                f"could not use KMS key {key_id} ({type(e).__name__}); check AWS region, endpoint and credentials"
            ) from e

    def _need_key_id(self) -> str:
        if not self.key_id:
            raise UsageError("a KMS key id, alias or ARN is needed to encrypt; pass the KMS key id")
        return self.key_id

    def arn(self) -> str:
        """The key's ARN (an alias or key id resolved by KMS)."""
        return self._call("describe_key", self._need_key_id())["KeyMetadata"]["Arn"]

    def new_data_key(self, *, context: dict[str, str]) -> tuple[bytes, bytes, str]:
        r = self._call("generate_data_key", self._need_key_id(), KeySpec="AES_256", EncryptionContext=context)
        return r["Plaintext"], r["CiphertextBlob"], r["KeyId"]

    def wrap(self, data_key: bytes, *, context: dict[str, str]) -> tuple[bytes, str]:
        r = self._call("encrypt", self._need_key_id(), Plaintext=data_key, EncryptionContext=context)
        return r["CiphertextBlob"], r["KeyId"]

    def unwrap(self, wrapped: bytes, *, key_id: str, context: dict[str, str]) -> bytes:
        r = self._call("decrypt", key_id, CiphertextBlob=wrapped, EncryptionContext=context)
        return r["Plaintext"]


def _context(data_key_id: str) -> dict[str, str]:
    return {"pgdrill:purpose": "backup-data-key", "pgdrill:data_key_id": data_key_id}


def new_data_key(wrapper: KeyWrapper) -> tuple[bytes, dict[str, Any]]:
    """Create a backup's data key; return it with the metadata for BackupRecord.encryption."""
    data_key_id = "dk-" + secrets.token_hex(8)
    data_key, wrapped, key_id = wrapper.new_data_key(context=_context(data_key_id))
    meta = {"format": META_FORMAT, "algorithm": ALGORITHM, "data_key_id": data_key_id}
    return data_key, meta | _wrapped_fields(wrapper, wrapped, key_id)


def _wrapped_fields(wrapper: KeyWrapper, wrapped: bytes, key_id: str) -> dict[str, Any]:
    return {"wrapping": wrapper.wrapping, "key_id": key_id, "wrapped_key": base64.b64encode(wrapped).decode()}


def _checked(meta: dict[str, Any] | None) -> dict[str, Any]:
    if not meta:
        raise UsageError("this backup is not encrypted; there is no data key to unwrap")
    missing = [k for k in _META_FIELDS if k not in meta]
    if missing:
        raise IntegrityCheckFailed(f"encryption metadata lacks {', '.join(missing)}; restore the catalog from a copy")
    if meta["format"] != META_FORMAT or meta["algorithm"] != ALGORITHM:
        raise IntegrityCheckFailed(
            f"encryption {meta['algorithm']} format {meta['format']} is unknown to this backup-tools; "
            "upgrade backup-tools (or the catalog is corrupted)"
        )
    return meta


def unwrap_data_key(meta: dict[str, Any] | None, wrapper: KeyWrapper | None) -> bytes:
    """Return a backup's data key from its encryption metadata, using the key file or KMS key given."""
    meta = _checked(meta)
    if wrapper is None:
        how = "its KMS key" if meta["wrapping"] == "aws-kms" else f"--key-file FILE or {KEY_FILE_ENV}"
        raise EncryptionKeyError(f"backup is encrypted with key id {meta['key_id']}; pass {how}")
    if wrapper.wrapping != meta["wrapping"]:
        raise EncryptionKeyError(
            f"backup encrypted with {meta['wrapping']} key id {meta['key_id']}, you gave a {wrapper.wrapping} key "
            f"({getattr(wrapper, 'key_id', None)}); pass the key that was used"
        )
    try:
        wrapped = base64.b64decode(meta["wrapped_key"], validate=True)
    except (binascii.Error, ValueError, TypeError) as e:
        raise IntegrityCheckFailed("the wrapped data key in the catalog is not base64; restore the catalog") from e
    data_key = wrapper.unwrap(wrapped, key_id=meta["key_id"], context=_context(meta["data_key_id"]))
    if len(data_key) != KEY_BYTES:
        raise IntegrityCheckFailed(f"unwrapped data key has {len(data_key)} bytes, expected {KEY_BYTES}")
    return data_key


def rewrap(meta: dict[str, Any] | None, old_wrapper: KeyWrapper | None, new_wrapper: KeyWrapper) -> dict[str, Any]:
    """Return metadata with the same data key wrapped by `new_wrapper` (key rotation; data is not rewritten)."""
    meta = _checked(meta)
    data_key = unwrap_data_key(meta, old_wrapper)
    wrapped, key_id = new_wrapper.wrap(data_key, context=_context(meta["data_key_id"]))
    return meta | _wrapped_fields(new_wrapper, wrapped, key_id)


def wrapper_for(
    meta: dict[str, Any] | None, *, key_file: str | os.PathLike[str] | None = None, kms_client: Any = None
) -> KeyWrapper:
    """Pick the wrapper that can open a backup: its KMS key by id, or the key file (default $PGDRILL_KEY_FILE)."""
    meta = _checked(meta)
    if meta["wrapping"] == "aws-kms":
        return KmsKey(meta["key_id"], client=kms_client)
    return load_key_file(key_file)
