"""The one seam every backup object and WAL file passes through: store_object / open_object (compress, encrypt).

Stored form of an object: encrypt(compress(plaintext)), with repo/compress.py's codecs and security/aead.py's
chunked AES-256-GCM. Backup objects record their codec and checksums in the catalog (FileEntry); WAL
files have no catalog, so they are stored *self-describing*: a small envelope
`b"PGDW1\\n" + JSON header + b"\\n" + payload` whose header carries the plaintext size and sha256, the
codec and the encryption metadata (a data key per WAL file, wrapped by the key file or KMS key).
Reads verify the stored sha256 (when known), decrypt (authenticated), decompress, and verify the
plaintext sha256 and size at EOF; any mismatch raises IntegrityCheckFailed naming the object.

A file:// repository with no compression and no encryption takes a fast path: the file is hard-linked
into the repository (same filesystem) instead of copied, so a staged backup costs no second write.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from backup_tools.errors import IntegrityCheckFailed, RepositoryError
from backup_tools.repo.base import Repository
from backup_tools.repo.compress import check_codec, compressing_reader, decompressing_reader, frames_checksummed
from backup_tools.repo.objstreams import Chain, CheckedPlain, Hashing, Named
from backup_tools.streams import CHUNK, HashingReader, fsync_dir, sha256_of

ENVELOPE_MAGIC = b"PGDW1\n"
MAX_HEADER = 64 * 1024


@dataclass(frozen=True)
class Sealing:
    """Encryption of a set of objects: the data key and its metadata (BackupRecord.encryption form)."""

    data_key: bytes
    meta: dict[str, Any]

    def __repr__(self) -> str:
        return f"Sealing(key_id={self.meta.get('key_id')!r}, data_key_id={self.meta.get('data_key_id')!r})"


def new_sealing(key_file: str | os.PathLike[str] | None) -> Sealing | None:
    """A fresh data key wrapped by the key file (None when no key file is given or set in the environment)."""
    from backup_tools.security.keys import (  # local: crypto is only needed when encrypting
        new_data_key,
        resolve_key_file,
    )

    if resolve_key_file(key_file) is None:
        return None
    from backup_tools.security.keys import load_key_file

    data_key, meta = new_data_key(load_key_file(key_file))
    return Sealing(data_key, meta)


def open_sealing(meta: dict[str, Any] | None, *, key_file: str | os.PathLike[str] | None) -> Sealing | None:
    """Unwrap the data key of encrypted objects (None for plaintext ones)."""
    if not meta:
        return None
    from backup_tools.security.keys import unwrap_data_key, wrapper_for

    return Sealing(unwrap_data_key(meta, wrapper_for(meta, key_file=key_file)), meta)


@dataclass(frozen=True)
class StoredObject:
    """What store_object wrote: stored size/sha256 and the plaintext's."""

    key: str
    size: int
    sha256: str
    plain_size: int
    plain_sha256: str
    codec: str


def _sealed(src: BinaryIO, *, codec: str, sealing: Sealing | None, scope: str, name: str) -> BinaryIO:
    stream = compressing_reader(src, codec=codec)
    if sealing is None:
        return stream
    from backup_tools.security.aead import encrypting_reader

    key_id = sealing.meta["data_key_id"]
    return encrypting_reader(stream, data_key=sealing.data_key, key_id=key_id, backup_id=scope, object_name=name)


def store_object(
    repo: Repository,
    key: str,
    src: Path | BinaryIO,
    *,
    codec: str = "none",
    sealing: Sealing | None = None,
    scope: str,
    envelope: dict[str, Any] | None = None,
    sha256: str | None = None,
) -> StoredObject:
    """Store a file or stream under key (never overwriting); with envelope, a self-describing WAL-style object.

    sha256: the caller already hashed the file src (while it was written, or wal-push before checking for a
    copy already archived); a hard link or an envelope header then uses it instead of re-reading the file.
    """
    check_codec(codec)
    name = key.rsplit("/", 1)[-1]
    if not isinstance(src, Path):
        return _store_stream(repo, key, src, codec=codec, sealing=sealing, scope=scope, name=name)
    if envelope is None and codec == "none" and sealing is None and repo.local_path(key) is not None:
        linked = _link_into(repo, key, src, sha256=sha256)
        if linked is not None:
            return linked
    with open(src, "rb") as raw:
        if envelope is None:
            return _store_stream(repo, key, raw, codec=codec, sealing=sealing, scope=scope, name=name)
        plain_sha, plain_size = sha256 or sha256_of(raw)[1], os.fstat(raw.fileno()).st_size
        raw.seek(0)
        header = {**envelope, "size": plain_size, "sha256": plain_sha, "codec": codec}
        header["encryption"] = sealing.meta if sealing else None
        head = ENVELOPE_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"
        body = _sealed(raw, codec=codec, sealing=sealing, scope=scope, name=name)
        info = repo.put_stream(key, io.BufferedReader(Chain(head, body), CHUNK))  # type: ignore[arg-type]
        return StoredObject(key, info.size, info.sha256, plain_size, plain_sha, codec)


def _store_stream(
    repo: Repository, key: str, src: BinaryIO, *, codec: str, sealing: Sealing | None, scope: str, name: str
) -> StoredObject:
    hashing = Hashing(src)
    try:
        body = _sealed(io.BufferedReader(hashing, CHUNK), codec=codec, sealing=sealing, scope=scope, name=name)  # type: ignore[arg-type]
        info = repo.put_stream(key, body)
        return StoredObject(key, info.size, info.sha256, hashing.size, hashing.hexdigest(), codec)
    finally:
        hashing.close()  # stops its hashing thread; src stays open for the caller


def open_object(
    repo: Repository,
    key: str,
    *,
    codec: str = "none",
    sealing: Sealing | None = None,
    scope: str,
    size: int | None = None,
    sha256: str | None = None,
    plain_size: int | None = None,
    plain_sha256: str | None = None,
) -> BinaryIO:
    """Open a stored object as verified plaintext; every checksum is checked when the stream reaches EOF."""
    stream = repo.open_read(key, sha256=sha256, size=size)
    if sealing is not None:
        from backup_tools.security.aead import decrypting_reader

        stream = decrypting_reader(
            stream, data_key=sealing.data_key, key_id=sealing.meta["data_key_id"], backup_id=scope,
            object_name=key.rsplit("/", 1)[-1],
        )  # fmt: skip
    if codec == "none" and sealing is None and sha256 is not None and plain_sha256 in (None, sha256):
        return io.BufferedReader(Named(stream, key=key, url=repo.url), CHUNK)  # type: ignore[arg-type,return-value]
    plain = decompressing_reader(stream, codec=codec)
    reader = CheckedPlain(plain, key=key, sha256=plain_sha256, size=plain_size,
                          self_checked=(lambda: frames_checksummed(plain)) if codec == "zstd" else None)  # fmt: skip
    return io.BufferedReader(Named(reader, key=key, url=repo.url), CHUNK)  # type: ignore[arg-type,return-value]


def read_envelope(repo: Repository, key: str) -> tuple[dict[str, Any], BinaryIO]:
    """Open a self-describing object: return its header and the raw (still sealed) payload stream."""
    raw = repo.open_read(key)
    magic = raw.read(len(ENVELOPE_MAGIC))
    if magic != ENVELOPE_MAGIC:
        raw.close()
        raise IntegrityCheckFailed(
            f"{key} in {repo.url} has no backup-tools header (corrupted, truncated or written by another tool); "
            "delete it and re-archive it from the server's pg_wal if it is still there"
        )
    line = raw.readline(MAX_HEADER)
    try:
        header = json.loads(line)
        if not isinstance(header, dict) or "sha256" not in header or "size" not in header:
            raise ValueError("incomplete header")
    except ValueError as e:
        raw.close()
        raise IntegrityCheckFailed(f"{key} in {repo.url} has a corrupted header ({e}); re-archive it") from e
    return header, raw


def open_envelope(repo: Repository, key: str, *, key_file: str | os.PathLike[str] | None = None) -> BinaryIO:
    """Open a self-describing object as verified plaintext."""
    header, raw = read_envelope(repo, key)
    return unseal_envelope(repo, key, header, raw, key_file=key_file)


def unseal_envelope(
    repo: Repository, key: str, header: dict[str, Any], raw: BinaryIO, *, key_file: str | os.PathLike[str] | None
) -> BinaryIO:
    """The verified plaintext of an envelope already opened with read_envelope."""
    sealing = open_sealing(header.get("encryption"), key_file=key_file)
    stream: BinaryIO = raw
    if sealing is not None:
        from backup_tools.security.aead import decrypting_reader

        stream = decrypting_reader(
            raw, data_key=sealing.data_key, key_id=sealing.meta["data_key_id"], backup_id="wal",
            object_name=key.rsplit("/", 1)[-1],
        )  # fmt: skip
    stream = decompressing_reader(stream, codec=header.get("codec", "none"))
    reader = HashingReader(stream, key=key, expected_sha256=header["sha256"], expected_size=int(header["size"]))  # type: ignore[arg-type]
    return io.BufferedReader(Named(reader, key=key, url=repo.url), CHUNK)  # type: ignore[return-value]


def copy_to_file(src: BinaryIO, dest: Path, *, durable: bool = True) -> int:
    """Write a verified stream to dest via a temp file (fsync unless not durable), rename; nothing left on error."""
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    size = 0
    try:
        with src, open(tmp, "wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                size += len(chunk)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, dest)
        if durable:
            fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def drain(src: BinaryIO) -> None:
    """Read a stream to its end (so its EOF checksum checks run)."""
    while src.read(CHUNK):
        pass


def _link_into(repo: Repository, key: str, src: Path, *, sha256: str | None = None) -> StoredObject | None:
    """Hard-link a staged file into a file:// repository (None when not on the same filesystem)."""
    dest = repo.local_path(key)
    assert dest is not None, "only for repositories with local files"
    if dest.exists():
        raise RepositoryError(f"{key} already exists in {repo.url}; refusing to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except FileExistsError as e:
        raise RepositoryError(f"{key} already exists in {repo.url}; refusing to overwrite it") from e
    except OSError:
        return None  # another filesystem (EXDEV) or no hard links: copy instead
    with open(dest, "rb") as f:
        os.fsync(f.fileno())
        digest = sha256 or sha256_of(f)[1]
        size = os.fstat(f.fileno()).st_size
    fsync_dir(dest.parent)
    return StoredObject(key, size, digest, size, digest, "none")
