"""Streams for the S3 repository: hashing upload source, resuming download body, boto error helpers."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from backup_tools.errors import RepositoryError

BOTO = (ClientError, BotoCoreError)
TRANSIENT = (BotoCoreError, OSError)  # mid-stream failures worth resuming a download after


def no_clobber(params: dict, **_: Any) -> None:
    """Make a PutObject / CompleteMultipartUpload conditional: fail with 412 if the key exists."""
    params["IfNoneMatch"] = "*"


def error_code(e: Exception) -> tuple[str, int]:
    """A boto error's S3 error code and HTTP status ("", 0 when there was no answer)."""
    if not isinstance(e, ClientError):
        return "", 0
    return e.response.get("Error", {}).get("Code", ""), e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


def read_full(src: BinaryIO, n: int) -> bytes:
    """Read n bytes, or fewer only at EOF (pipes return short reads)."""
    parts, got = [], 0
    while got < n and (data := src.read(n - got)):
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class HashingSource:
    """A non-seekable reader over buffered bytes then a stream, hashing what s3transfer reads."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head, self._rest = io.BytesIO(head), rest
        self.sha, self.size = hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self._head.read(n)
        if n < 0:
            data += self._rest.read()
        elif len(data) < n:
            data += read_full(self._rest, n - len(data))
        self.sha.update(data)
        self.size += len(data)
        return data


class ResumingBody(io.RawIOBase):
    """An object's GET stream that resumes with a ranged GET (same ETag) when the connection breaks."""

    def __init__(self, key: str, response: dict, *, reopen: Callable[[int, str], dict], attempts: int, where: str):
        """reopen(position, etag) returns the ranged GET response from position on (the repository's errors)."""
        self._key, self._resp, self._reopen, self._attempts, self._where = key, response, reopen, attempts, where
        self._etag, self._pos, self._resumes = response["ETag"], 0, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, n: int = -1) -> bytes:
        while True:
            try:
                data = self._resp["Body"].read(None if n < 0 else n)
                self._pos += len(data)
                return data
            except TRANSIENT as e:
                self._resume(e)

    def _resume(self, error: Exception) -> None:
        self._resumes += 1
        if self._resumes >= self._attempts:
            raise RepositoryError(
                f"reading {self._key} from {self._where} broke off at byte {self._pos} "
                f"{self._resumes} times ({type(error).__name__}); check the network and retry"
            ) from error
        time.sleep(min(2.0, 0.2 * 2**self._resumes))
        self._resp = self._reopen(self._pos, self._etag)

    def close(self) -> None:
        self._resp["Body"].close()
        super().close()
