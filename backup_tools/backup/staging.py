"""Staging directories: private (0700), marked with their owner, removed once stale.

pg_basebackup writes files, and pg_verifybackup checks them before anything is stored, so a physical
backup stages its plaintext on local disk while it runs; so does a directory-format pg_dump. Where:
inside a file:// repository (`<repo>/staging/`, on the same filesystem, so unencrypted objects are
hard-linked in without a copy), else in `<--staging-dir or the temp dir>/pgdrill-staging-<uid>/`. Each
backup's directory is 0700 and holds `.owner.json` (pid, host, repository). Every backup run first
removes what killed runs left, for every repository kind: in a repository's own staging area everything
(the repository lock is held), in a shared staging root the directories of this host whose process is gone.
Earlier versions staged in `pgdrill-<backup id>-XXXXXXXX` (physical) and `pgdrill-dump-XXXXXXXX` (logical)
directly in the temp dir or --staging-dir; those are removed too when they are ours (our uid, exactly that
name), untouched for LEGACY_GRACE and open in no process we can see. An encrypted physical backup stages no
plaintext at all (backup/physical.py streams it); this module is for what is still staged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backup_tools.errors import UsageError
from backup_tools.repo.base import Repository, is_stale_lock, read_lock

OWNER = ".owner.json"
UNMARKED_GRACE = 600.0  # a directory without its owner file yet (being created) is left alone this long
LEGACY_GRACE = 3600.0  # an earlier version's staging directory with nothing written for this long is stale
LEGACY = re.compile(r"pgdrill-(?:dump|\d{8}T\d{6}Z-(?:full|incremental)-[0-9a-f]{4})-[a-z0-9_]{8}")
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


def clear_stale(root: Path, *, locked: bool, log: Log, staging_dir: Path | None = None) -> list[Path]:
    """Remove staging left by killed backups: all of it when locked (a repository's own area), else dead owners'.

    Also what earlier versions left in the temp dir and in staging_dir (see clear_legacy).
    """
    removed = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if not entry.is_dir() or not (locked or _abandoned(entry)):
            continue
        log(f"### Removing {entry}, left by a backup that was killed")
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    for parent in dict.fromkeys([Path(tempfile.gettempdir()), *([staging_dir] if staging_dir else [])]):
        removed += clear_legacy(parent, log=log)
    return removed


def clear_legacy(parent: Path, *, log: Log, grace: float = LEGACY_GRACE) -> list[Path]:
    """Remove earlier versions' staging directories in parent: ours by uid and name, stale, and open nowhere."""
    removed = []
    try:
        entries = sorted(e for e in parent.iterdir() if LEGACY.fullmatch(e.name))
    except OSError:
        return removed
    for entry in entries:
        try:
            info = entry.lstat()  # lstat: a symlink with our name is not followed, nor removed
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        if time.time() - _newest_mtime(entry) < grace or _in_use(entry):
            continue
        log(f"### Removing {entry}, staging left by an earlier version's backup that was killed")
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _newest_mtime(top: Path) -> float:
    """The newest modification time of top and everything under it (symlinks not followed)."""
    newest = top.lstat().st_mtime
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
            except FileNotFoundError:
                continue
    return newest


def _in_use(top: Path) -> bool:
    """Whether a process we can see has a file open under top or works in it (Linux /proc; else assume not)."""
    inside = str(top) + os.sep
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            paths = [proc / "cwd", *(proc / "fd").iterdir()]
        except OSError:
            continue  # another user's process, or gone
        for path in paths:
            try:
                link = os.readlink(path)
            except OSError:
                continue  # closed meanwhile
            if link == str(top) or link.startswith(inside):
                return True
    return False


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
