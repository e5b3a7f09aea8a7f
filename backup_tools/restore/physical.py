"""`backup-tools restore`: rebuild a data directory from a backup chain and configure point-in-time recovery.

Refuses a non-empty target directory or one a server runs in (unless force); fetches every object with
its checksums verified; combines an incremental chain with pg_combinebackup; writes recovery.signal,
restore_command (wal-fetch from the same repository) and the target. On any failure the target
directory is left as it was found (empty). start_restored() (restore/start.py, re-exported here) starts
the result and waits until recovery reached its target.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backup_tools.backup.basebackup import extract_backup
from backup_tools.catalog import WAL
from backup_tools.errors import RecoveryError, UsageError
from backup_tools.pg import server as pg_server
from backup_tools.pg.bin import PgBin
from backup_tools.pg.run import run
from backup_tools.repo.base import Repository
from backup_tools.repo.objects import open_sealing
from backup_tools.repo.s3.placement import request_restores
from backup_tools.restore.pitr import RecoveryTarget, backup_chain, choose_backup, configure_recovery, recovery_settings
from backup_tools.restore.start import (
    StartedServer,
    promise_recovery_end,
    server_running,
    start_restored,
    stop_restored,
)
from backup_tools.wal.archive import wal_names
from backup_tools.wal.lsn import classify, find_gaps, parse_lsn, parse_segment_name, segment_name
from backup_tools.wal.prefetch import FollowPlan, prefetch_wal, prefetching_command, wal_to_follow, wal_to_prefetch

logger = logging.getLogger(__name__)

Log = Callable[[str], Any]


@dataclass(frozen=True)
class RestoreResult:
    """A restored data directory: which backups made it, how many bytes, and seconds per phase."""

    data_dir: Path
    backup_id: str
    chain: tuple[str, ...]
    target: RecoveryTarget | None
    bytes: int
    phases: dict[str, float] = field(default_factory=dict)
    follow: FollowPlan | None = None  # the WAL start_restored keeps fetching ahead of recovery (None: no prefetch)


def restore_command(
    repo_url: str, *, key_file: str | None = None, prefetched: bool = False, wal_dir: Path | None = None
) -> str:
    """The restore_command running wal-fetch from this repository (first using prefetched files, if asked)."""
    extra = ["--key-file", str(Path(key_file).resolve())] if key_file else []
    fetch = shlex.join([sys.executable, "-m", "backup_tools", "wal-fetch", "%f", "%p", "--repo", repo_url, *extra])
    return prefetching_command(fetch, wal_dir=wal_dir) if prefetched else fetch


def prepare_target(to: Path, *, force: bool, pg: PgBin, log: Log) -> None:
    """Make `to` an empty directory, refusing a non-empty one or a running server unless force."""
    pid = server_running(to)
    if pid is not None:
        if not force:
            raise UsageError(
                f"a PostgreSQL server (pid {pid}) is running in {to}; stop it first, or pass --force to stop it "
                "and replace its data directory"
            )
        log(f"### Stopping the server (pid {pid}) running in {to} (--force)")
        pg_server.stop(pg, to)
    if to.exists() and not to.is_dir():
        raise UsageError(f"{to} exists and is not a directory; pass a directory path with --to")
    if to.exists() and any(to.iterdir()):
        if not force:
            raise UsageError(f"{to} is not empty; restore into a new or empty directory, or pass --force to replace it")
        log(f"### Emptying {to} (--force)")
        for child in to.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    to.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(to, 0o700)


def check_wal_for(
    repo: Repository, record: Any, target: RecoveryTarget | None, *, log: Log, names: list[str] | None = None
) -> None:
    """Refuse a restore that would silently stop at a WAL gap: no target, or an LSN target past the gap."""
    size = int(record.options.get("wal_segment_size", 16 * 1024 * 1024))
    if not record.start_lsn or not record.timeline:
        return
    start = segment_name(record.timeline, parse_lsn(record.start_lsn), wal_segment_size=size)
    names = wal_names(repo) if names is None else names
    gaps = [
        g for tl, gs in find_gaps(names, wal_segment_size=size).items() if tl >= record.timeline for g in gs
        if g.last > start or tl > record.timeline
    ]  # fmt: skip
    if not gaps:
        return
    gap = gaps[0]
    where = f"WAL {gap.first}..{gap.last} ({gap.count} segment(s)) is missing from {repo.url}"
    gap_lsn = parse_segment_name(gap.first, wal_segment_size=size).start_lsn
    if target is None or (target.lsn is not None and parse_lsn(target.lsn) >= gap_lsn):
        raise RecoveryError(
            f"{where}: recovery would stop at the gap and lose every later commit; give a recovery target "
            "before the gap (--target-time/--target-lsn), or restore the missing files to the archive first"
        )
    log(f"### Warning: {where}; recovery fails if the target lies beyond it")


@dataclass(frozen=True)
class RestoreOptions:
    """Which backup a physical restore takes and how: recovery target, force, key, archiving, WAL prefetch.

    force replaces a non-empty directory (stopping a server running in it); archive leaves archive_mode as in the
    backup; with prefetch, the WAL recovery asks for first is fetched (verified) into pg_wal now (wal/prefetch).
    """

    backup_id: str = "latest"
    target: RecoveryTarget | None = None
    force: bool = False
    key_file: str | None = None
    archive: bool = False
    prefetch: bool = True


def restore(
    repo: Repository, *, to: Path, pg: PgBin, options: RestoreOptions = RestoreOptions(), log: Log = logger.info
) -> RestoreResult:
    """Restore a physical backup (and its incremental chain) into `to`, configured to recover to options.target."""
    o = options
    backup_id, target, force, key_file = o.backup_id, o.target, o.force, o.key_file
    archive, prefetch = o.archive, o.prefetch
    to = Path(to).absolute()
    record = choose_backup(repo.list_backups(), target, backup_id=backup_id)
    if record.kind == "logical":
        raise UsageError(f"backup {record.id} is logical: restore it with --dsn DSN instead of --to DIR")
    chain = backup_chain(repo, record)
    request_restores(repo, chain, log=log)  # archived objects: RestorePending before anything is written
    names = wal_names(repo)
    check_wal_for(repo, record, target, log=log, names=names)
    sealings = {r.id: open_sealing(r.encryption, key_file=key_file) for r in chain}
    prepare_target(to, force=force, pg=pg, log=log)
    log(f"### Restoring backup {record.id} ({' + '.join(r.id for r in chain)}) into {to}")
    phases: dict[str, float] = {}
    staged: list[Path] = []
    total = 0
    wal_key = key_file or _encrypted_key_file(chain)
    early = wal_to_prefetch(record, names) if prefetch else []
    fetcher = _Prefetch(repo, early, to, key_file=wal_key)
    try:
        began = time.monotonic()
        if len(chain) == 1:
            fetcher.start()  # WAL prefetch runs beside the extraction
            total = extract_backup(repo, record, to, sealing=sealings[record.id], log=log)
        else:
            for r in chain:
                stage = to.parent / f".{to.name}.restore-{r.id}"
                shutil.rmtree(stage, ignore_errors=True)
                stage.mkdir(mode=0o700)
                staged.append(stage)
                total += extract_backup(repo, r, stage, sealing=sealings[r.id], log=log)
        phases["fetch"] = time.monotonic() - began
        if staged:
            began = time.monotonic()
            log(f"### Combining {len(staged)} backups with pg_combinebackup")
            to.rmdir()
            run([pg.tool("pg_combinebackup"), "--no-sync", "-o", to, *staged], timeout=None)
            os.chmod(to, 0o700)
            phases["combine"] = time.monotonic() - began
            fetcher.start()
        if early:
            log(f"### Prefetched {len(early)} WAL file(s) into {to / 'pg_wal'}: {early[0]} .. {early[-1]}")
        fetcher.join()
        local = repo.local_path(WAL)
        cmd = restore_command(repo.url, key_file=wal_key, prefetched=prefetch, wal_dir=local)
        configure_recovery(to, recovery_settings(restore_command=cmd, target=target, archive=archive))
        if target is None and (end := archive_end(record, names)):
            promise_recovery_end(to, segment=end[0], lsn=end[1])
    except BaseException:
        fetcher.join(quiet=True)
        shutil.rmtree(to, ignore_errors=True)
        to.mkdir(mode=0o700, exist_ok=True)
        raise
    finally:
        for stage in staged:
            shutil.rmtree(stage, ignore_errors=True)
    log(f"### Restored {total} bytes; recovery will replay WAL to {(target or RecoveryTarget()).describe()}")
    follow = wal_to_follow(record, names, early, key_file=wal_key) if prefetch else None
    return RestoreResult(to, record.id, tuple(r.id for r in chain), target, total, phases, follow)


def archive_end(record: Any, names: list[str]) -> tuple[str, int] | None:
    """The last archived segment a restore without a target must replay into, and its start LSN.

    None when the archive has a newer timeline than the backup's: which one recovery follows is then
    PostgreSQL's choice (recovery_target_timeline), checked by the server itself.
    """
    if not record.timeline or not record.start_lsn:
        return None
    walfiles = [w for n in names if (w := classify(n)) is not None]
    if any(w.timeline > record.timeline for w in walfiles if w.kind in ("segment", "history")):
        return None
    segments = sorted(w.name for w in walfiles if w.kind == "segment" and w.timeline == record.timeline)
    if not segments:
        return None
    size = int(record.options.get("wal_segment_size", 16 * 1024 * 1024))
    start = parse_segment_name(segments[-1], wal_segment_size=size).start_lsn
    return (segments[-1], start) if start >= parse_lsn(record.start_lsn) else None


class _Prefetch:
    """prefetch_wal in a background thread; join() re-raises its error."""

    def __init__(self, repo: Repository, names: list[str], data_dir: Path, *, key_file: str | None):
        self._args, self._key_file = (repo, names, data_dir), key_file
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            prefetch_wal(*self._args, key_file=self._key_file)
        except BaseException as e:  # noqa: BLE001 - re-raised by join
            self._error = e

    def start(self) -> None:
        """Start fetching."""
        self._thread = threading.Thread(target=self._run, name="wal-prefetch", daemon=True)
        self._thread.start()

    def join(self, *, quiet: bool = False) -> None:
        """Wait for the fetch; raise its error unless quiet."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None and not quiet:
            raise self._error


def _encrypted_key_file(chain: list[Any]) -> str | None:
    if any(r.encryption for r in chain) and os.environ.get("PGDRILL_KEY_FILE"):
        return os.environ["PGDRILL_KEY_FILE"]
    return None


__all__ = [
    "RestoreOptions",
    "RestoreResult",
    "StartedServer",
    "restore",
    "server_running",
    "start_restored",
    "stop_restored",
]
