"""Backup repositories addressed by URL (file:// here, s3:// in repo/s3/repository.py) with one interface."""

from __future__ import annotations

import io
import json
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from backup_tools.catalog import (
    BACKUPS,
    CATALOG_NAME,
    BackupRecord,
    sort_by_catalog_time,
)
from backup_tools.errors import BackupNotFound, DocumentMissing, RepositoryError, UsageError
from backup_tools.streams import HashingReader, copy_hashing, fsync_dir


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object's key, size and sha256 (hex)."""

    key: str
    size: int
    sha256: str




class Repository(ABC):
    """Object store for backups, WAL and catalogs; every implementation streams and verifies."""

    url: str
    placement: Any = None  # storage class / Object Lock of backup objects (a repo.s3.placement.Placement); see placed()

    @abstractmethod
    def put_stream(self, key: str, src: BinaryIO, *, overwrite: bool = False) -> ObjectInfo:
        """Store a stream under key atomically (readers never see a partial object)."""

    @abstractmethod
    def open_raw(self, key: str) -> BinaryIO:
        """Open a stored object for reading, raising DocumentMissing (a RepositoryError) if absent."""

    @abstractmethod
    def stat(self, key: str) -> int | None:
        """Return the size of an object, or None when it does not exist."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """List keys under a prefix, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing object is not an error."""

    @abstractmethod
    @contextmanager
    def lock(self, name: str = "repo") -> Iterator[None]:
        """Hold an exclusive lock on the repository; a second holder fails fast."""

    @contextmanager
    def cleanup(self) -> Iterator[None]:
        """Clean-up after a failure runs in here: remote repositories give each request a short deadline."""
        yield

    def list_sizes(self, prefix: str) -> dict[str, int]:
        """Keys under a prefix with their stored sizes (objects deleted meanwhile are left out)."""
        return {k: n for k in self.list(prefix) if (n := self.stat(k)) is not None}

    def placed(self, placement: Any) -> Repository:
        """This repository writing backup objects with placement (storage class, Object Lock); None: unchanged."""
        if placement is None:
            return self
        raise UsageError(f"--storage-class and --lock-days need an s3:// repository; {self.url} is not one")

    def local_path(self, key: str) -> Path | None:
        """The local file holding key when the repository keeps objects as plain files (file://), else None.

        Operations use it to hard-link staged files in, let tar read a stored file, or stage beside the repository.
        """
        return None

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> ObjectInfo:
        """Store a small object."""
        return self.put_stream(key, io.BytesIO(data), overwrite=overwrite)

    def exists(self, key: str) -> bool:
        """Tell whether an object exists."""
        return self.stat(key) is not None

    def open_read(self, key: str, *, sha256: str | None = None, size: int | None = None) -> BinaryIO:
        """Open an object for reading; its checksum is verified when the stream reaches EOF."""
        return io.BufferedReader(HashingReader(self.open_raw(key), key=key, expected_sha256=sha256, expected_size=size))

    def get_bytes(self, key: str, *, sha256: str | None = None) -> bytes:
        """Read a small object whole."""
        with self.open_read(key, sha256=sha256) as f:
            return f.read()

    def write_catalog(self, record: BackupRecord) -> None:
        """Write a backup's catalog record (overwriting the previous state of that backup)."""
        self.put_bytes(f"{BACKUPS}/{record.id}/{CATALOG_NAME}", record.to_json().encode(), overwrite=True)

    def read_catalog(self, backup_id: str) -> BackupRecord:
        """Read one backup's catalog record (one read; a missing record is BackupNotFound)."""
        try:
            return self._catalog_at(f"{BACKUPS}/{backup_id}/{CATALOG_NAME}")
        except DocumentMissing as e:
            raise BackupNotFound(
                f"no backup {backup_id!r} in {self.url}; run `backup-tools list --repo {self.url}`"
            ) from e

    def list_backups(self) -> list[BackupRecord]:
        """All catalog records, oldest first by catalog time."""
        records = [self._catalog_at(key) for key in self.list(f"{BACKUPS}/") if key.endswith("/" + CATALOG_NAME)]
        return sort_by_catalog_time(records)

    def _catalog_at(self, key: str) -> BackupRecord:
        """Read a catalog record in one request; parsing checks this small JSON, so no stored sha256 is looked up."""
        with self.open_raw(key) as f:
            return BackupRecord.from_json(f.read())


class FileRepository(Repository):
    """A repository in a local directory: temp file, fsync, atomic rename, fsync of the directory."""

    def __init__(self, root: Path):
        self.root = root
        self.url = f"file://{root}"

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise UsageError(f"invalid object key {key!r}")
        return self.root / key

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def put_stream(self, key: str, src: BinaryIO, *, overwrite: bool = False) -> ObjectInfo:
        path = self._path(key)
        if not overwrite and path.exists():
            raise RepositoryError(f"{key} already exists in {self.url}; refusing to overwrite it")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
            try:
                with open(tmp, "wb") as dst:
                    size, digest = copy_hashing(src, dst)
                    dst.flush()
                    os.fsync(dst.fileno())
                if overwrite:
                    os.replace(tmp, path)
                else:
                    os.link(tmp, path)  # fails if another writer won the race; never replaces an existing object
                    tmp.unlink()
            finally:
                tmp.unlink(missing_ok=True)
            fsync_dir(path.parent)
        except FileExistsError as e:
            raise RepositoryError(f"{key} already exists in {self.url}; refusing to overwrite it") from e
        except OSError as e:
            raise RepositoryError(
                f"could not write {key} to {self.url}: {e.strerror}; check space and permissions"
            ) from e
        return ObjectInfo(key, size, digest)

    def open_raw(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as e:
            raise DocumentMissing(f"{key} is missing from {self.url}") from e
        except OSError as e:
            raise RepositoryError(f"could not read {key} from {self.url}: {e.strerror}") from e

    def stat(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RepositoryError(f"could not read {self.url}: {e.strerror}; check the path and permissions") from e

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not self.root.is_dir():
            raise RepositoryError(f"repository {self.url} does not exist; create the directory or fix --repo")
        if not base.exists():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith("."))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    @contextmanager
    def lock(self, name: str = "repo") -> Iterator[None]:
        path = self._path(f"locks/{name}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for attempt in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                holder = read_lock(path)
                if attempt == 0 and is_stale_lock(holder):
                    path.unlink(missing_ok=True)
                    continue
                raise RepositoryError(
                    f"{self.url} is locked by pid {holder.get('pid')} on {holder.get('host')} "
                    f"(another backup-tools run); wait for it, or remove {path} if that process is gone"
                ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(owner, f)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def read_lock(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def is_stale_lock(holder: dict) -> bool:
    """A lock is stale when its holder ran on this host and that process no longer exists."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
