"""Staging directories: private (0700), marked with their owner, removed once stale.

pg_basebackup writes files, and pg_verifybackup checks them before anything is stored, so a physical
backup stages its plaintext on local disk while it runs; so does a directory-format pg_dump. Where:
inside a file:// repository (`<repo>/staging/`, on the same filesystem, so unencrypted objects are
hard-linked in without a copy), else in `<--staging-dir or the temp dir>/pgdrill-staging-<uid>/`. Each
backup's directory is 0700 and holds `.owner.json` (pid, host, repository). Every backup run first
removes what killed runs left, for every repository kind: in a repository's own staging area everything
(the repository lock is held), in a shared staging root the directories of this host whose process is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backup_tools.errors import UsageError
from backup_tools.repo.base import Repository, is_stale_lock, read_lock

OWNER = ".owner.json"
UNMARKED_GRACE = 600.0  # a directory without its owner file yet (being created) is left alone this long
Log = Callable[[str], Any]


def staging_root(repo: Repository, staging_dir: Path | None) -> Path:
    """The directory backups of this repository stage under (created 0700; another user's is refused)."""
    in_repo = repo.local_path("staging") if staging_dir is None else None  # file://: beside the objects, hard-linked
    root = in_repo or (staging_dir or Path(tempfile.gettempdir())) / f"pgdrill-staging-{os.getuid()}"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = root.stat()
    if info.st_uid != os.getuid():
        raise UsageError(f"staging directory {root} belongs to another user; pass a --staging-dir of your own")
    if info.st_mode & 0o077:
        root.chmod(0o700)
    return root


def clear_stale(root: Path, *, locked: bool, log: Log) -> list[Path]:
    """Remove staging left by killed backups: all of it when locked (a repository's own area), else dead owners'."""
    removed = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if not entry.is_dir() or not (locked or _abandoned(entry)):
            continue
        log(f"### Removing {entry}, left by a backup that was killed")
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _abandoned(entry: Path) -> bool:
    owner = read_lock(entry / OWNER)
    if owner:
        return is_stale_lock(owner)
    try:
        return time.time() - entry.stat().st_mtime > UNMARKED_GRACE
    except FileNotFoundError:
        return False


def new_staging(root: Path, backup_id: str, *, repo_url: str) -> Path:
    """A fresh 0700 directory for one backup, marked with this process as its owner."""
    path = Path(tempfile.mkdtemp(prefix=f"{backup_id}-", dir=root))  # mkdtemp: mode 0700
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "repo": repo_url}
    (path / OWNER).write_text(json.dumps(owner))
    return path
