"""A managed pg_receivewal: stream WAL through a replication slot into a directory, then push it to a repository.

With synchronous=True pg_receivewal flushes every write and reports it at once, so with
`synchronous_standby_names` naming its application_name (see require_sync) a commit is acknowledged
only once its WAL is on the streamer's disk: RPO ≈ 0. Completed segments are pushed with wal_push
(same checksummed objects as archive_command); the current segment stays `.partial` until it is
complete, and stop(push_partial=True) archives it as `<name>.partial` for a failover.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from backup_tools.errors import ToolFailed, UsageError
from backup_tools.pg.bin import PgBin
from backup_tools.pg.conn import connect, libpq_env
from backup_tools.pg.run import merged_env, run, tail
from backup_tools.repo.base import Repository
from backup_tools.wal.archive import wal_push
from backup_tools.wal.lsn import classify

logger = logging.getLogger(__name__)

APP_NAME = "pgdrill_receivewal"
Log = Callable[[str], Any]


@dataclass
class WalStreamer:
    """One pg_receivewal process writing into `directory` through replication slot `slot`."""

    dsn: str
    directory: Path
    pg: PgBin
    slot: str = "pgdrill_receivewal"
    synchronous: bool = False
    app_name: str = APP_NAME
    log: Log = logger.info
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _errlog: Path | None = field(default=None, init=False, repr=False)
    pushed: list[str] = field(default_factory=list, init=False)

    def start(self, *, timeout: float = 30) -> None:
        """Create the slot if missing, start pg_receivewal, and wait until the server sees it streaming."""
        if self._proc is not None:
            raise UsageError("this streamer is already running; stop() it first")
        self.directory.mkdir(parents=True, exist_ok=True)
        tool = self.pg.tool("pg_receivewal")
        with libpq_env(self.dsn) as env:
            env = {**env, "PGAPPNAME": self.app_name}
            run([tool, "--create-slot", "--if-not-exists", "--slot", self.slot, "--no-password"], env=env, timeout=60)
            # No --no-loop: pg_receivewal reconnects by itself when the server restarts, as a standing streamer must.
            args = [os.fspath(tool), "-D", os.fspath(self.directory), "--slot", self.slot, "--no-password"]
            if self.synchronous:
                args.append("--synchronous")
            self._errlog = self.directory.parent / f".{self.directory.name}.receivewal.log"
            with open(self._errlog, "wb") as err:
                self._proc = subprocess.Popen(args, env=merged_env(env), stdin=subprocess.DEVNULL, stderr=err)
        self.log(f"### Started pg_receivewal (pid {self._proc.pid}, slot {self.slot}) into {self.directory}")
        self._wait_streaming(timeout)

    def _wait_streaming(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with connect(self.dsn, purpose="watch pg_receivewal") as conn:
            while time.monotonic() < deadline:
                self.check_alive()
                row = conn.execute(
                    "SELECT state FROM pg_stat_replication WHERE application_name = %s", [self.app_name]
                ).fetchone()
                if row and row[0] == "streaming":
                    return
                time.sleep(0.1)
        self.stop()
        said = tail(self._errlog.read_text()) if self._errlog else ""
        raise ToolFailed(
            f"pg_receivewal did not start streaming within {timeout:.0f} s ({said or 'no output'}); "
            "check the slot, the DSN and pg_hba.conf"
        )

    def check_alive(self) -> None:
        """Raise ToolFailed (with pg_receivewal's last words) if it exited."""
        if self._proc is not None and self._proc.poll() is not None:
            code, self._proc = self._proc.returncode, None
            raise ToolFailed(
                f"pg_receivewal exited with {code}: {tail(self._errlog.read_text()) if self._errlog else ''}"
            )

    def push_completed(self, repo: Repository, *, delete: bool = True) -> list[str]:
        """Push every completed segment (and history file) to repo; return their names."""
        self.check_alive()
        done = []
        for path in sorted(self.directory.iterdir()):
            wal = classify(path.name)
            if wal is None or wal.kind == "partial" or path.name.startswith("."):
                continue
            wal_push(path, repo=repo)
            done.append(path.name)
            if delete and wal.kind == "segment":
                path.unlink()
        self.pushed += done
        return done

    def stop(self, *, repo: Repository | None = None, push_partial: bool = False) -> None:
        """Stop pg_receivewal (it flushes first); optionally push everything, the open segment as .partial."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.log(f"### Stopped pg_receivewal (pid {proc.pid})")
        if repo is not None:
            self.push_completed(repo)
            if push_partial:
                for path in sorted(self.directory.glob("*.partial")):
                    wal_push(path, repo=repo)
                    self.pushed.append(path.name)

    def drop_slot(self) -> None:
        """Drop the replication slot (else the server keeps WAL for it forever)."""
        with connect(self.dsn, purpose="drop the replication slot") as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", [self.slot]
            )


def require_sync(dsn: str, *, app_name: str = APP_NAME, on: bool = True) -> None:
    """Make commits wait for the streamer (synchronous_standby_names), or stop waiting (on=False)."""
    value = f'"{app_name}"' if on else ""
    with connect(dsn, purpose="set synchronous_standby_names") as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")
