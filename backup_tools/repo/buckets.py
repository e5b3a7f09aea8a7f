"""Document buckets that backup/files.py backs up and restores: an S3 bucket (s3://bucket/prefix) or a local directory."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlparse

from backup_tools.errors import DocumentMissing, RepositoryError, UsageError
from backup_tools.repo.objects import copy_to_file
from backup_tools.streams import sha256_of

if TYPE_CHECKING:
    from backup_tools.repo.s3.repository import S3Options


@dataclass(frozen=True)
class SourceObject:
    """One object of a document bucket as listed: key, size and the store's ETag (None for files)."""

    key: str
    size: int
    etag: str | None = None


class DocumentBucket(ABC):
    """Where application documents live; keys are '/'-separated paths."""

    url: str

    @abstractmethod
    def list_objects(self) -> list[SourceObject]:
        """Every object, sorted by key."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Open an object for reading (DocumentMissing naming it when it is gone)."""

    @abstractmethod
    def put(self, key: str, src: BinaryIO) -> None:
        """Write (or replace) an object from a stream; nothing partial is left on error."""

    def delete(self, key: str) -> None:
        """Delete an object (a missing one is not an error): erasure replay removes a subject's documents."""
        raise UsageError(f"{self.url}: deleting documents is not supported here")

    def prepare(self) -> None:
        """Make the bucket ready to receive a restore (a directory is created)."""
        return None  # an S3 bucket must already exist

    def sha256(self, key: str) -> str:
        """The sha256 of an object's content (reads it)."""
        with self.open(key) as f:
            return sha256_of(f)[1]


def check_key(key: str) -> str:
    """Refuse keys that could escape a restore directory."""
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise UsageError(f"document key {key!r} is not a safe relative path; it cannot be restored to a directory")
    return key


class DirectoryBucket(DocumentBucket):
    """A local directory of documents; keys are paths relative to it."""

    def __init__(self, root: Path):
        self.root = root
        self.url = f"file://{root}"

    def prepare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RepositoryError(f"could not create {self.root}: {e.strerror}; check the path and permissions") from e

    def list_objects(self) -> list[SourceObject]:
        if not self.root.is_dir():
            raise RepositoryError(f"document directory {self.root} does not exist; fix --source/--to or create it")
        out = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(dirpath) / name
                if (name.startswith(".") and ".tmp-" in name) or not path.is_file():
                    continue  # our own temp files, sockets, dangling links
                out.append(SourceObject(path.relative_to(self.root).as_posix(), path.stat().st_size))
        return sorted(out, key=lambda o: o.key)

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.root / check_key(key), "rb")
        except FileNotFoundError as e:
            raise DocumentMissing(f"{key} is missing from {self.url}") from e
        except OSError as e:
            raise RepositoryError(f"could not read {key} from {self.url}: {e.strerror}") from e

    def delete(self, key: str) -> None:
        try:
            (self.root / check_key(key)).unlink(missing_ok=True)
        except OSError as e:
            raise RepositoryError(f"could not delete {key} from {self.url}: {e.strerror}") from e

    def put(self, key: str, src: BinaryIO) -> None:
        dest = self.root / check_key(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            copy_to_file(src, dest)
        except OSError as e:
            raise RepositoryError(f"could not write {dest}: {e.strerror}; check space and permissions") from e


class S3Bucket(DocumentBucket):
    """Documents under s3://bucket/prefix (endpoint from AWS_ENDPOINT_URL), through S3Repository's client."""

    def __init__(self, url: str, options: S3Options | None = None):
        from backup_tools.repo.s3.repository import S3Repository

        self.repo = S3Repository.from_url(url, options)
        self.url = self.repo.url

    def list_objects(self) -> list[SourceObject]:
        # the ETag is what makes incremental bucket backups cheap
        listed = self.repo.list_with_etags("")
        return [SourceObject(o.key, o.size, o.etag) for o in listed if o.key and not o.key.endswith("/")]

    def open(self, key: str) -> BinaryIO:
        return self.repo.open_raw(key)

    def put(self, key: str, src: BinaryIO) -> None:
        self.repo.put_stream(key, src, overwrite=True)

    def delete(self, key: str) -> None:
        self.repo.delete(key)


def open_bucket(location: str) -> DocumentBucket:
    """A document bucket from s3://bucket/prefix, file:///path or a plain directory path."""
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        return S3Bucket(location)
    if parsed.scheme == "file":
        return DirectoryBucket(Path(unquote(parsed.path)))
    if parsed.scheme == "":
        return DirectoryBucket(Path(location).resolve())
    raise UsageError(f"unsupported document bucket {location!r}: use s3://bucket/prefix, file:///path or a directory")
