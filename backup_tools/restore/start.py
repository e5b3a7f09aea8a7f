"""Start a restored data directory and wait until recovery reached its target, explaining failures from the log.

start_restored() starts the server with pg_ctl and waits until it is promoted (or paused / shut down at the
target), turning "recovery ended before configured recovery target was reached" and similar log lines into
a RecoveryError with the server stopped.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_tools.errors import RecoveryError
from backup_tools.pg import server as pg_server
from backup_tools.pg.bin import PgBin
from backup_tools.pg.run import run
from backup_tools.pg.server import read_log, server_running
from backup_tools.restore.pitr import RecoveryTarget
from backup_tools.wal.lsn import format_lsn, parse_lsn
from backup_tools.wal.prefetch import PREFETCH_DIR, WalFollower, remove_prefetched

logger = logging.getLogger(__name__)

Log = Callable[[str], Any]


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

# Where restore() records the end of the archived WAL a restore without a target promised to reach.
RECOVERY_END = f"{PREFETCH_DIR}/recovery-end.json"
# Log lines with which PostgreSQL ends recovery at a WAL file it could not use (and then promotes).
_EARLY_END = re.compile(
    r"unexpected pageaddr|from different database system|invalid magic number|incorrect prev-link|"
    r"invalid record length|contrecord|invalid resource manager|incorrect resource manager data checksum"
)


def start_restored(
    data_dir: Path,
    *,
    pg: PgBin,
    port: int,
    socket_dir: Path,
    target: RecoveryTarget | None = None,
    logfile: Path | None = None,
    timeout: float = 600,
    follower: WalFollower | None = None,
    log: Log = logger.info,
) -> StartedServer:
    """Start a restored data directory and wait until recovery reached its target (promoted, or paused).

    follower: fetches archived WAL ahead of recovery while it runs (wal/prefetch.py), stopped before this returns.
    """
    logfile = logfile or data_dir.parent / f"{data_dir.name}.log"
    describe = (target or RecoveryTarget()).describe()
    log(f"### Starting the restored server in {data_dir} on port {port}; replaying WAL to {describe}")
    began, offset = time.monotonic(), logfile.stat().st_size if logfile.exists() else 0
    if follower is not None:
        follower.start(logfile, offset)
    try:
        return _wait_for_target(data_dir, pg=pg, port=port, socket_dir=socket_dir, target=target, logfile=logfile,
                                timeout=timeout, began=began, offset=offset, describe=describe,
                                follower=follower)  # fmt: skip
    finally:
        if follower is not None:
            follower.stop()
            if follower.fetched or follower.error:
                stopped = f"; it stopped at: {follower.error}" if follower.error else ""
                log(f"### Fetched {follower.fetched} WAL file(s) ahead of recovery while it ran{stopped}")


def _wait_for_target(data_dir: Path, *, pg: PgBin, port: int, socket_dir: Path, target: RecoveryTarget | None,
                     logfile: Path, timeout: float, began: float, offset: int, describe: str,
                     follower: WalFollower | None = None) -> StartedServer:  # fmt: skip
    try:
        options = ["-p", str(port), "-k", str(socket_dir), "-c", "listen_addresses="]
        pg_server.start(pg, data_dir, logfile=logfile, options=options, timeout=timeout)
    except Exception as e:
        raise _recovery_error(data_dir, logfile, describe, pg=pg, offset=offset) from e
    action = target.action if target is not None and _has_target(target) else "promote"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read_log(logfile, offset)
        if server_running(data_dir) is None:
            if action == "shutdown" and "shutdown at recovery target" in text:
                return StartedServer(
                    data_dir, port, socket_dir, logfile, "shut down at target", time.monotonic() - began
                )
            raise _recovery_error(data_dir, logfile, describe, pg=pg, offset=offset)
        if action == "pause" and "pausing at the end of recovery" in text:
            return StartedServer(data_dir, port, socket_dir, logfile, "paused at target", time.monotonic() - began)
        if "database system is ready to accept connections" in text:  # then confirm with the control file
            state = run([pg.tool("pg_controldata"), "-D", data_dir], check=False).stdout
            if "in production" in state:
                check_recovery_end(data_dir, logfile, offset=offset, pg=pg)
                if follower is not None:
                    follower.stop()  # before the directory it writes into goes
                remove_prefetched(data_dir)
                return StartedServer(data_dir, port, socket_dir, logfile, "promoted", time.monotonic() - began)
        time.sleep(0.02)
    stop_restored(data_dir, pg=pg)
    raise RecoveryError(f"recovery to {describe} did not finish within {timeout:.0f} s; server stopped. Log: {logfile}")


def promise_recovery_end(data_dir: Path, *, segment: str, lsn: int) -> None:
    """Record that recovery must replay the archived WAL at least into segment (which starts at lsn)."""
    path = data_dir / RECOVERY_END
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps({"segment": segment, "lsn": format_lsn(lsn)}))


def check_recovery_end(data_dir: Path, logfile: Path, *, pg: PgBin, offset: int = 0) -> None:
    """After promotion: fail (server stopped) when redo ended before the archived WAL restore promised to reach."""
    path = data_dir / RECOVERY_END
    if not path.exists():
        return
    promise = json.loads(path.read_text())
    text = read_log(logfile, offset)
    done = re.findall(r"redo done at ([0-9A-F]+/[0-9A-F]+)", text)
    if done and parse_lsn(done[-1]) >= parse_lsn(promise["lsn"]):
        return
    stop_restored(data_dir, pg=pg, mode="immediate")
    reason = next((ln.strip() for ln in text.splitlines() if _EARLY_END.search(ln)), "no reason in the log")
    reached = f"redo ended at {done[-1]}" if done else "no WAL was replayed"
    raise RecoveryError(
        f"recovery ended early: {reached}, but the archive holds WAL up to {promise['segment']} (from "
        f"{promise['lsn']}); PostgreSQL stopped at: {reason}. The restored copy lacks every later commit: find the damaged or "
        f"misplaced WAL file at that point of the archive, put the right one back and restore again (server stopped; "
        f"log: {logfile})"
    )


def stop_restored(data_dir: Path, *, pg: PgBin, mode: str = "fast") -> None:
    """Stop a server started by start_restored (nothing to do when it is not running)."""
    if server_running(data_dir) is not None:
        pg_server.stop(pg, data_dir, mode=mode, check=False)


def _has_target(target: RecoveryTarget) -> bool:
    return any(getattr(target, k) is not None for k in ("time", "lsn", "xid", "name")) or target.immediate


def _recovery_error(data_dir: Path, logfile: Path, describe: str, *, pg: PgBin, offset: int) -> RecoveryError:
    """Explain why a restored server stopped, from its log; make sure it is stopped."""
    stop_restored(data_dir, pg=pg, mode="immediate")
    text = read_log(logfile, offset)
    for needle, message in _FAILURES:
        if needle in text:
            return RecoveryError(message.format(target=describe) + f" (server stopped; log: {logfile})")
    fatal = next((ln for ln in reversed(text.splitlines()) if "FATAL" in ln or "PANIC" in ln), "no FATAL line")
    return RecoveryError(
        f"the restored server did not finish recovery: {fatal.strip()} (server stopped; log: {logfile})"
    )
