"""WAL archiving: wal-push (PostgreSQL's archive_command contract) and wal-fetch (restore_command)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from backup_tools.errors import IntegrityError, RepositoryError, UsageError, WalMissing
from backup_tools.repository import WAL, Repository, fsync_dir

# PostgreSQL aborts recovery when restore_command exits above 125 (as for a signal), instead of
# treating the failure as "end of archive" and promoting early with data missing.
WAL_FETCH_ABORT_EXIT = 200


@dataclass(frozen=True)
class WalPushResult:
    """What wal-push did with one file."""

    name: str
    size: int
    sha256: str
    already_archived: bool


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def wal_push(wal_path: Path, *, repo: Repository) -> WalPushResult:
    """Archive one WAL file: never overwrite; identical content already there is success."""
    name = wal_path.name
    if not wal_path.is_file():
        raise UsageError(f"{wal_path} is not a file; archive_command must pass %p")
    key = f"{WAL}/{name}"
    if repo.exists(key):
        local, stored = file_sha256(wal_path), hashlib.sha256(repo.get_bytes(key)).hexdigest()
        if local != stored:
            raise RepositoryError(
                f"{name} is already archived in {repo.url} with DIFFERENT content; refusing to overwrite it. "
                "Two clusters may share one archive: give each its own repository"
            )
        return WalPushResult(name, wal_path.stat().st_size, local, already_archived=True)
    with open(wal_path, "rb") as f:
        info = repo.put_stream(key, f)
    return WalPushResult(name, info.size, info.sha256, already_archived=False)


def wal_fetch(name: str, dest: Path, *, repo: Repository) -> int:
    """Restore one WAL file to dest atomically; WalMissing when the archive does not have it."""
    key = f"{WAL}/{name}"
    if not repo.exists(key):
        raise WalMissing(f"{name} is not in {repo.url}")
    tmp = dest.with_name(f".{dest.name}.fetching")
    try:
        with repo.open_read(key) as src, open(tmp, "wb") as out:
            size = 0
            while chunk := src.read(1 << 20):
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except (OSError, IntegrityError, RepositoryError):
        tmp.unlink(missing_ok=True)
        raise
    return size
