"""Byte streams shared by every layer: chunked reads, hashing readers, pull adapters, fsync helpers."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO, cast

from backup_tools.errors import IntegrityCheckFailed

CHUNK = 1 << 20
READ_SIZE = 1 << 16


def widen_pipe(fd: int, size: int = CHUNK) -> None:
    """Give a pipe a CHUNK-sized buffer where the system allows it (Linux; at most fs.pipe-max-size).

    With the default 64 KiB a producer process stalls whenever the reader's threads hold both cores for a moment:
    a backup piped out of pg_basebackup took 2.0 s instead of 1.5 s (PostgreSQL 15, 606 MB, BENCHMARKS.md).
    """
    import fcntl

    if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux only
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


class HashingReader(io.RawIOBase):
    """Wraps a stream, hashing what is read; at EOF raises IntegrityCheckFailed if the sha256 or size differ."""

    def __init__(self, raw: BinaryIO, *, key: str, expected_sha256: str | None, expected_size: int | None = None):
        self._raw, self._key = raw, key
        self._expected, self._expected_size = expected_sha256, expected_size
        self._hash, self._size, self._done = hashlib.sha256(), 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        if not data:
            self._check()
            return 0
        buffer[: len(data)] = data
        self._hash.update(data)
        self._size += len(data)
        return len(data)

    def _check(self) -> None:
        if self._done:
            return
        self._done = True
        check_read(self._key, self._size, self._hash.hexdigest(), size=self._expected_size, sha256=self._expected)

    def close(self) -> None:
        self._raw.close()
        super().close()


def check_read(key: str, got_size: int, got_sha256: str, *, size: int | None, sha256: str | None) -> None:
    """Raise IntegrityCheckFailed naming key when what was read differs from the recorded size or sha256 (None: unknown)."""
    if size is not None and got_size != size:
        raise IntegrityCheckFailed(
            f"{key}: read {got_size} bytes, catalog says {size} (truncated or replaced); "
            "restore from another backup or copy"
        )
    if sha256 and got_sha256 != sha256:
        raise IntegrityCheckFailed(
            f"{key}: sha256 {got_sha256[:16]}… does not match the catalog's "
            f"{sha256[:16]}… (corrupted object); restore from another backup or copy"
        )


def sha256_of(src: BinaryIO | Path) -> tuple[int, str]:
    """Read a stream (or a file, by path) to its end in chunks: (bytes read, sha256 hex)."""
    if isinstance(src, Path):
        with open(src, "rb") as f:
            return sha256_of(f)
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def copy_hashing(src: BinaryIO, dst: BinaryIO) -> tuple[int, str]:
    """Copy a stream in chunks, returning (bytes, sha256 hex)."""
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename or new file in a directory durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PullReader(io.RawIOBase):
    """A read-only stream whose bytes come from `_produce()`, one piece at a time, until it returns None."""

    def __init__(self, src: BinaryIO):
        self._src = src
        self._buf = memoryview(b"")
        self._finished = False

    def _produce(self) -> bytes | None:
        """Return the next piece of output (possibly empty), or None at the end."""
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._buf:
            if self._finished:
                return 0
            piece = self._produce()
            if piece is None:
                self._finished = True
                return 0
            self._buf = memoryview(piece)
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._src.close()
        super().close()


def read_exact(src: BinaryIO, size: int) -> bytes:
    """Read `size` bytes, fewer only at end of stream (sources may return short reads)."""
    first = src.read(size)
    if not first or len(first) == size:
        return first or b""
    parts, got = [first], len(first)
    while got < size and (more := src.read(size - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def as_binary_io(raw: io.RawIOBase) -> BinaryIO:
    """Wrap a raw adapter so read(n) returns n bytes unless at the end."""
    return cast(BinaryIO, io.BufferedReader(raw, buffer_size=READ_SIZE))
