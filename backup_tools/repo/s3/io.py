"""Streams for the S3 repository: hashing upload source, resuming download body, boto error helpers."""

from __future__ import annotations

import hashlib
import io
import time
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from backup_tools.errors import IntegrityError, RepositoryError

if TYPE_CHECKING:
    from backup_tools.repo.s3.repository import S3Repository

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

    def __init__(self, repo: S3Repository, key: str, response: dict):
        self._repo, self._key, self._resp = repo, key, response
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
        if self._resumes >= self._repo.attempts:
            raise RepositoryError(
                f"reading {self._key} from {self._repo.endpoint} broke off at byte {self._pos} "
                f"{self._resumes} times ({type(error).__name__}); check the network and retry"
            ) from error
        time.sleep(min(2.0, 0.2 * 2**self._resumes))
        try:
            self._resp = self._repo._c.get_object(
                Bucket=self._repo.bucket,
                Key=self._repo._full(self._key),
                Range=f"bytes={self._pos}-",
                IfMatch=self._etag,
            )
        except BOTO as e:
            if error_code(e)[0] == "PreconditionFailed":
                raise IntegrityError(f"{self._key} in {self._repo.url} was replaced while being read; retry") from e
            raise self._repo._fail(e, f"resuming the read of {self._key}") from e

    def close(self) -> None:
        self._resp["Body"].close()
        super().close()
