"""Streaming AES-256-GCM encryption of backup objects in authenticated chunks (keys: see security/keys.py).

Stored format of an encrypted object (integers big-endian):

    header  "PGDE" | version u8 (=1) | chunk_size u32 | stream_id 16 random bytes
            | key_id_len u8 | key_id (utf-8, the backup's data_key_id) | commitment 16 bytes
    chunks  nonce 12 random bytes | ciphertext (chunk_size bytes, the last 0..chunk_size) | tag 16 bytes

Each object gets its own keys: HKDF-SHA256(data key, salt=stream_id) yields the AES-256-GCM key and the
commitment, so the header says whether the data key is the right one before anything is decrypted.
The associated data of chunk i is: the whole header | i (u64) | final flag (u8) | len-prefixed backup id
| len-prefixed object name. The last chunk has the final flag, and is followed by nothing; an empty
object is one empty final chunk. So a flipped bit, reordered or swapped chunks, a chunk from another
object or another encryption of the same one, a missing last chunk, trailing data, or an object renamed
or moved to another backup all fail authentication.

Fail closed. A wrong data key or a header for another key id raises EncryptionKeyError (exit code 3)
before any output; a chunk that fails authentication raises IntegrityCheckFailed (tampered or truncated).
A decrypting reader hands out a chunk only after its tag verified, but a failure in a later chunk
arrives after earlier chunks were read: consumers must treat the exception as "no output", which
`decrypt_to_file` does by writing to a temp file that it deletes on failure.

Compose with compression as encrypt(compress(data)): compressed bytes are incompressible afterwards.
The key-management names (load_key_file, generate_key_file_text, new_data_key, rewrap, ...) are
re-exported here from security/keys.py.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
import uuid
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from backup_tools.errors import BackupToolsError, EncryptionKeyError, IntegrityCheckFailed, UsageError
from backup_tools.security.keys import (  # noqa: F401  (re-exported: aead.py is the package's encryption entry point)
    KEY_FILE_ENV,
    KeyWrapper,
    KmsKey,
    LocalKey,
    generate_key_file_text,
    load_key_file,
    new_data_key,
    rewrap,
    unwrap_data_key,
    wrapper_for,
)
from backup_tools.streams import PullReader, as_binary_io, fsync_dir, read_exact

MAGIC = b"PGDE"
VERSION = 1
CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20
NONCE, TAG, STREAM_ID, COMMIT = 12, 16, 16, 16
_FIXED = struct.Struct(">4sBI16sB")


def _derive(data_key: bytes, stream_id: bytes) -> tuple[AESGCM, bytes]:
    """Return the object's AES-GCM cipher and its 32-byte commitment key."""
    if len(data_key) != 32:
        raise EncryptionKeyError("the data key must be 32 bytes (AES-256); unwrap it with keys.unwrap_data_key")
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=stream_id, info=b"pgdrill/v1/object").derive(data_key)
    return AESGCM(okm[:32]), okm[32:]


def _lp(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">I", len(raw)) + raw


def _header(*, chunk_size: int, stream_id: bytes, key_id: str, commit_key: bytes) -> bytes:
    kid = key_id.encode()
    if not 0 < len(kid) < 256:
        raise UsageError("key_id must be 1..255 bytes of utf-8 (the backup's data_key_id)")
    prefix = _FIXED.pack(MAGIC, VERSION, chunk_size, stream_id, len(kid)) + kid
    return prefix + hmac.new(commit_key, prefix, hashlib.sha256).digest()[:COMMIT]


def _aad(header: bytes, index: int, final: bool, backup_id: str, object_name: str) -> bytes:
    return header + struct.pack(">QB", index, final) + _lp(backup_id) + _lp(object_name)


class _Encrypt(PullReader):
    def __init__(self, src: BinaryIO, *, data_key: bytes, key_id: str, backup_id: str, object_name: str, size: int):
        super().__init__(src)
        stream_id = secrets.token_bytes(STREAM_ID)
        self._aes, commit_key = _derive(data_key, stream_id)
        self._header = _header(chunk_size=size, stream_id=stream_id, key_id=key_id, commit_key=commit_key)
        self._names, self._size = (backup_id, object_name), size
        self._index, self._next, self._started = 0, b"", False

    def _produce(self) -> bytes | None:
        if not self._started:
            self._started, self._next = True, read_exact(self._src, self._size)
            return self._header
        if self._next is None:
            return None
        chunk = self._next
        following = read_exact(self._src, self._size) if len(chunk) == self._size else b""
        final = not following
        nonce = secrets.token_bytes(NONCE)
        aad = _aad(self._header, self._index, final, *self._names)
        self._index, self._next = self._index + 1, (None if final else following)
        return nonce + self._aes.encrypt(nonce, chunk, aad)


class _Decrypt(PullReader):
    def __init__(self, src: BinaryIO, *, data_key: bytes, key_id: str, backup_id: str, object_name: str):
        super().__init__(src)
        self._names = (backup_id, object_name)
        fixed = read_exact(src, _FIXED.size)
        if len(fixed) < _FIXED.size or fixed[:4] != MAGIC:
            raise IntegrityCheckFailed(
                f"{object_name} is not an encrypted backup-tools object (no PGDE header; truncated, replaced "
                "or stored unencrypted); restore from another copy"
            )
        _, version, size, stream_id, kid_len = _FIXED.unpack(fixed)
        if version != VERSION:
            raise IntegrityCheckFailed(f"{object_name}: encryption format {version} is unknown; upgrade backup-tools")
        if not 0 < size <= MAX_CHUNK_SIZE:
            raise IntegrityCheckFailed(f"{object_name}: header chunk size {size} is invalid (corrupted object)")
        rest = read_exact(src, kid_len + COMMIT)
        if len(rest) < kid_len + COMMIT:
            raise IntegrityCheckFailed(f"{object_name}: encryption header is truncated; restore from another copy")
        stored_id = rest[:kid_len].decode(errors="replace")
        if stored_id != key_id:
            raise EncryptionKeyError(
                f"{object_name} was encrypted with data key {stored_id}, the catalog gives {key_id}; "
                "use this backup's own catalog (encryption metadata) to decrypt it"
            )
        self._aes, commit_key = _derive(data_key, stream_id)
        self._header = _header(chunk_size=size, stream_id=stream_id, key_id=key_id, commit_key=commit_key)
        if not hmac.compare_digest(self._header, fixed + rest):
            raise EncryptionKeyError(
                f"{object_name}: the data key does not open this object (wrong key, or its header was altered); "
                "nothing was decrypted — check that the key file or KMS key is the one used for the backup"
            )
        self._record, self._index, self._peek, self._done = NONCE + size + TAG, 0, b"", False

    def _produce(self) -> bytes | None:
        if self._done:
            return None
        record = self._peek + read_exact(self._src, self._record - len(self._peek))
        self._peek = self._src.read(1) if len(record) == self._record else b""
        final = not self._peek
        what = "truncated" if final and len(record) < NONCE + TAG else "failed authentication"
        aad = _aad(self._header, self._index, final, *self._names)
        try:
            plain = self._aes.decrypt(record[:NONCE], record[NONCE:], aad)
        except (InvalidTag, ValueError) as e:
            raise IntegrityCheckFailed(
                f"{self._names[1]}: chunk {self._index} {what} (tampered, truncated, reordered, or another "
                "object's data); nothing past the last verified chunk was released — restore from another copy"
            ) from e
        self._index, self._done = self._index + 1, final
        return plain


def encrypting_reader(
    src: BinaryIO, *, data_key: bytes, key_id: str, backup_id: str, object_name: str, chunk_size: int = CHUNK_SIZE
) -> BinaryIO:
    """Return a stream yielding `src` encrypted (for Repository.put_stream); key_id is the data_key_id."""
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise UsageError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE}")
    enc = _Encrypt(src, data_key=data_key, key_id=key_id, backup_id=backup_id, object_name=object_name, size=chunk_size)
    return as_binary_io(enc)


def decrypting_reader(src: BinaryIO, *, data_key: bytes, key_id: str, backup_id: str, object_name: str) -> BinaryIO:
    """Return a stream yielding verified plaintext; checks the key before returning, raises on any tampering."""
    dec = _Decrypt(src, data_key=data_key, key_id=key_id, backup_id=backup_id, object_name=object_name)
    return as_binary_io(dec)


def decrypt_stream(
    src: BinaryIO, dst: BinaryIO, *, data_key: bytes, key_id: str, backup_id: str, object_name: str
) -> int:
    """Decrypt `src` into `dst`, returning plaintext bytes; on error `dst` may hold a verified prefix only."""
    reader = decrypting_reader(src, data_key=data_key, key_id=key_id, backup_id=backup_id, object_name=object_name)
    total = 0
    while chunk := reader.read(CHUNK_SIZE):
        dst.write(chunk)
        total += len(chunk)
    return total


def decrypt_to_file(
    src: BinaryIO, path: str | os.PathLike[str], *, data_key: bytes, key_id: str, backup_id: str, object_name: str
) -> int:
    """Decrypt into `path` via a temp file renamed into place only when all chunks verified; else nothing is left."""
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "xb") as f:
            total = decrypt_stream(
                src, f, data_key=data_key, key_id=key_id, backup_id=backup_id, object_name=object_name
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except OSError as e:
        raise BackupToolsError(
            f"could not write {dest}: {e.strerror}; check the directory, space and permissions"
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    return total
