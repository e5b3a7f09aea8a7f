"""Stream wrappers of the object seam: hashing beside compression, checked plaintext, header chaining, naming."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from backup_tools.errors import IntegrityCheckFailed
from backup_tools.streams import check_read

if TYPE_CHECKING:
    from concurrent.futures import Future


class Hashing(io.RawIOBase):
    """Counts and hashes what is read through it; each chunk is hashed in a helper thread while the reader
    compresses/encrypts it (hashlib and zstd both release the GIL), one chunk in flight, in order."""

    def __init__(self, raw: BinaryIO):
        from concurrent.futures import ThreadPoolExecutor  # here: wal-push / wal-fetch start faster without it

        self._raw, self._hash, self.size = raw, hashlib.sha256(), 0
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._pending: Future[None] | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        if self._pending is not None:
            self._pending.result()
        if data:
            self._pending = self._worker.submit(self._hash.update, data)
        self.size += len(data)
        return len(data)

    def hexdigest(self) -> str:
        """The sha256 of everything read."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        return self._hash.hexdigest()

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        super().close()


class CheckedPlain(Hashing):
    """Plaintext read through Hashing (hashed beside decompression); at EOF its size and sha256 must match.

    self_checked: asked once the first bytes are read; True (a codec that checks every frame itself, see
    compress.frames_checksummed) stops the hashing and leaves the size check. Hashing 606 MB cost 0.36 s of CPU.
    """

    def __init__(self, raw: BinaryIO, *, key: str, sha256: str | None, size: int | None,
                 self_checked: Callable[[], bool] | None = None):  # fmt: skip
        super().__init__(raw)
        self._key, self._sha256, self._size, self._checked = key, sha256, size, False
        self._self_checked = self_checked

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._self_checked is None:
            n = super().readinto(buffer)
        else:
            n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
            self.size += n
            if n and self._sha256 is not None:  # the first bytes decide
                if self._self_checked():
                    self._sha256 = None  # the codec checks every byte; a plain count suffices
                else:  # hash from here on, starting with these bytes
                    self._hash.update(buffer[:n])
                    self._self_checked = None
        if n == 0 and not self._checked:
            self._checked = True
            check_read(self._key, self.size, self.hexdigest(), size=self._size, sha256=self._sha256)
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class Chain(io.RawIOBase):
    """A header's bytes followed by a stream."""

    def __init__(self, head: bytes, body: BinaryIO):
        self._head, self._body = memoryview(head), body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class Named(io.RawIOBase):
    """Makes every IntegrityCheckFailed raised while reading name the object and repository."""

    def __init__(self, raw: io.RawIOBase, *, key: str, url: str):
        self._raw, self._key, self._url = raw, key, url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        try:
            return self._raw.readinto(buffer)
        except IntegrityCheckFailed as e:
            if self._key in str(e):
                raise
            raise IntegrityCheckFailed(f"{self._key} in {self._url}: {e}") from e

    def close(self) -> None:
        self._raw.close()
        super().close()
