"""The one pg_ctl wrapper: start, stop and promote a data directory, find its postmaster, read its log."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from backup_tools.pg.bin import PgBin
from backup_tools.pg.run import run


def pg_ctl(pg: PgBin, data_dir: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float | None = 120,
           check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run `pg_ctl -D data_dir ARGS` (ToolFailed with pg_ctl's words when it fails and check is set)."""
    return run([pg.tool("pg_ctl"), "-D", data_dir, *args], env=env, timeout=timeout, check=check)


def start(pg: PgBin, data_dir: Path, *, logfile: Path, options: Sequence[str] = (), timeout: float = 120,
          env: Mapping[str, str] | None = None) -> None:  # fmt: skip
    """Start the server and wait until it accepts connections (or, in recovery, is consistent); options go to postgres."""
    extra = ["-o", shlex.join(options)] if options else []
    pg_ctl(pg, data_dir, "-l", str(logfile), *extra, "-w", "-t", str(int(timeout)), "start", env=env,
           timeout=timeout + 30)  # fmt: skip


def stop(pg: PgBin, data_dir: Path, *, mode: str = "fast", env: Mapping[str, str] | None = None,
         timeout: float = 120, check: bool = True) -> None:  # fmt: skip
    """Stop the server (mode smart, fast or immediate) and wait until it is gone."""
    pg_ctl(pg, data_dir, "-m", mode, "-w", "stop", env=env, timeout=timeout, check=check)


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid recorded in data_dir/postmaster.pid, or None (the process may be gone)."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def server_running(data_dir: Path) -> int | None:
    """The pid of a postmaster running in data_dir, or None."""
    pid = postmaster_pid(data_dir)
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def read_log(path: Path, offset: int = 0) -> str:
    """A server log from byte offset on ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a server log."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"
