"""`backup-tools restore`: rebuild a data directory from a backup chain and configure point-in-time recovery.

Refuses a non-empty target directory or one a server runs in (unless force); fetches every object with
its checksums verified; combines an incremental chain with pg_combinebackup; writes recovery.signal,
restore_command (wal-fetch from the same repository) and the target. On any failure the target
directory is left as it was found (empty). start_restored() starts the result with pg_ctl and waits
until recovery reached its target, turning "recovery ended before configured recovery target was
reached" into a RecoveryError with the server stopped.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backup_tools.basebackup import extract_backup
from backup_tools.errors import RecoveryError, UsageError
from backup_tools.lsn import find_gaps, parse_lsn, parse_segment_name, segment_name
from backup_tools.objstore import open_sealing
from backup_tools.pgbin import PgBin
from backup_tools.pitr import RecoveryTarget, backup_chain, choose_backup, configure_recovery, recovery_settings
from backup_tools.repository import Repository
from backup_tools.runner import run
from backup_tools.wal import wal_names

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


def restore_command(repo_url: str, *, key_file: str | None = None) -> str:
    """The restore_command line running wal-fetch from this repository with this interpreter."""
    extra = ["--key-file", str(Path(key_file).resolve())] if key_file else []
    return shlex.join([sys.executable, "-m", "backup_tools", "wal-fetch", "%f", "%p", "--repo", repo_url, *extra])


def server_running(data_dir: Path) -> int | None:
    """The pid of a postmaster running in data_dir, or None."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


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
        run([pg.tool("pg_ctl"), "-D", to, "-m", "fast", "-w", "stop"], timeout=120)
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


def check_wal_for(repo: Repository, record: Any, target: RecoveryTarget | None, *, log: Log) -> None:
    """Refuse a restore that would silently stop at a WAL gap: no target, or an LSN target past the gap."""
    size = int(record.options.get("wal_segment_size", 16 * 1024 * 1024))
    if not record.start_lsn or not record.timeline:
        return
    start = segment_name(record.timeline, parse_lsn(record.start_lsn), wal_segment_size=size)
    gaps = [
        g for tl, gs in find_gaps(wal_names(repo), wal_segment_size=size).items() if tl >= record.timeline for g in gs
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


def restore(
    repo: Repository,
    *,
    to: Path,
    pg: PgBin,
    backup_id: str = "latest",
    target: RecoveryTarget | None = None,
    force: bool = False,
    key_file: str | None = None,
    archive: bool = False,
    log: Log = print,
) -> RestoreResult:
    """Restore a physical backup (and its incremental chain) into `to`, configured to recover to target."""
    to = Path(to).absolute()
    record = choose_backup(repo.list_backups(), target, backup_id=backup_id)
    if record.kind == "logical":
        raise UsageError(f"backup {record.id} is logical: restore it with --dsn DSN instead of --to DIR")
    chain = backup_chain(repo, record)
    check_wal_for(repo, record, target, log=log)
    sealings = {r.id: open_sealing(r.encryption, key_file=key_file) for r in chain}
    prepare_target(to, force=force, pg=pg, log=log)
    log(f"### Restoring backup {record.id} ({' + '.join(r.id for r in chain)}) into {to}")
    phases: dict[str, float] = {}
    staged: list[Path] = []
    total = 0
    try:
        began = time.monotonic()
        if len(chain) == 1:
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
        cmd = restore_command(repo.url, key_file=key_file or _encrypted_key_file(chain))
        configure_recovery(to, recovery_settings(restore_command=cmd, target=target, archive=archive))
    except BaseException:
        shutil.rmtree(to, ignore_errors=True)
        to.mkdir(mode=0o700, exist_ok=True)
        raise
    finally:
        for stage in staged:
            shutil.rmtree(stage, ignore_errors=True)
    log(f"### Restored {total} bytes; recovery will replay WAL to {(target or RecoveryTarget()).describe()}")
    return RestoreResult(to, record.id, tuple(r.id for r in chain), target, total, phases)


def _encrypted_key_file(chain: list[Any]) -> str | None:
    if any(r.encryption for r in chain) and os.environ.get("PGDRILL_KEY_FILE"):
        return os.environ["PGDRILL_KEY_FILE"]
    return None


@dataclass(frozen=True)
class StartedServer:
    """A restored server started by start_restored: where it listens, its log, and how recovery ended."""

    data_dir: Path
    port: int
    socket_dir: Path
    logfile: Path
    outcome: str
    seconds: float


_FAILURES = (
    ("recovery ended before configured recovery target was reached",
     "recovery ended before the target {target} was reached: the archive has no WAL that far (missing segment or "
     "a target after the last archived commit); restore to an earlier target, or put the missing WAL back"),
    ("requested recovery stop point is before consistent recovery point",
     "the target {target} is before the end of the backup (its consistent point); restore an older backup"),
    ("could not locate required checkpoint record", "the backup's starting WAL is missing from the archive"),
    ("WAL file is from different database system", "the archive holds WAL of another database system"),
)  # fmt: skip


def start_restored(
    data_dir: Path,
    *,
    pg: PgBin,
    port: int,
    socket_dir: Path,
    target: RecoveryTarget | None = None,
    logfile: Path | None = None,
    timeout: float = 600,
    log: Log = print,
) -> StartedServer:
    """Start a restored data directory and wait until recovery reached its target (promoted, or paused)."""
    logfile = logfile or data_dir.parent / f"{data_dir.name}.log"
    opts = shlex.join(["-p", str(port), "-k", str(socket_dir), "-c", "listen_addresses="])
    describe = (target or RecoveryTarget()).describe()
    log(f"### Starting the restored server in {data_dir} on port {port}; replaying WAL to {describe}")
    began, offset = time.monotonic(), logfile.stat().st_size if logfile.exists() else 0
    try:
        run([pg.tool("pg_ctl"), "-D", data_dir, "-l", logfile, "-o", opts, "-w", "-t", str(int(timeout)), "start"],
            timeout=timeout + 30)  # fmt: skip
    except Exception as e:
        raise _recovery_error(data_dir, logfile, describe, pg=pg, offset=offset) from e
    action = target.action if target is not None and _has_target(target) else "promote"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _read(logfile, offset)
        if server_running(data_dir) is None:
            if action == "shutdown" and "shutdown at recovery target" in text:
                return StartedServer(
                    data_dir, port, socket_dir, logfile, "shut down at target", time.monotonic() - began
                )
            raise _recovery_error(data_dir, logfile, describe, pg=pg, offset=offset)
        if action == "pause" and "pausing at the end of recovery" in text:
            return StartedServer(data_dir, port, socket_dir, logfile, "paused at target", time.monotonic() - began)
        state = run([pg.tool("pg_controldata"), "-D", data_dir], check=False).stdout
        if "in production" in state and "database system is ready to accept connections" in text:
            return StartedServer(data_dir, port, socket_dir, logfile, "promoted", time.monotonic() - began)
        time.sleep(0.1)
    stop_restored(data_dir, pg=pg)
    raise RecoveryError(f"recovery to {describe} did not finish within {timeout:.0f} s; server stopped. Log: {logfile}")


def stop_restored(data_dir: Path, *, pg: PgBin, mode: str = "fast") -> None:
    """Stop a server started by start_restored (nothing to do when it is not running)."""
    if server_running(data_dir) is not None:
        run([pg.tool("pg_ctl"), "-D", data_dir, "-m", mode, "-w", "stop"], check=False, timeout=120)


def _has_target(target: RecoveryTarget) -> bool:
    return any(getattr(target, k) is not None for k in ("time", "lsn", "xid", "name")) or target.immediate


def _read(path: Path, offset: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _recovery_error(data_dir: Path, logfile: Path, describe: str, *, pg: PgBin, offset: int) -> RecoveryError:
    """Explain why a restored server stopped, from its log; make sure it is stopped."""
    stop_restored(data_dir, pg=pg, mode="immediate")
    text = _read(logfile, offset)
    for needle, message in _FAILURES:
        if needle in text:
            return RecoveryError(message.format(target=describe) + f" (server stopped; log: {logfile})")
    fatal = next((ln for ln in reversed(text.splitlines()) if "FATAL" in ln or "PANIC" in ln), "no FATAL line")
    return RecoveryError(
        f"the restored server did not finish recovery: {fatal.strip()} (server stopped; log: {logfile})"
    )
