"""Helpers shared by the golden, sweep and model tests: run backup-tools, restore and fingerprint, hash a tree."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from unittest import mock

import psycopg

from backup_tools.pg.bin import PgBin
from backup_tools.pg.checks import Fingerprint, fingerprint
from backup_tools.pg.ports import free_port


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run backup-tools as its own process (PGDRILL_KEY_FILE only if env gives it); never raises on a failure."""
    base = {k: v for k, v in os.environ.items() if k != "PGDRILL_KEY_FILE"}
    return subprocess.run([sys.executable, "-m", "backup_tools", *args], capture_output=True, text=True,
                          timeout=timeout, env=base | (env or {}))  # fmt: skip


def run_main(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run backup-tools' main() in this process with env set (the sweeps run hundreds: no interpreter start-up each).

    Each run acts as its own process: the pid it writes into locks is one that has exited, as a real run's
    has once it ended. An exception main() does not turn into an exit code comes back as exit 99 with the
    traceback in stderr.
    """
    from backup_tools.cli.main import main

    out, err, pid = io.StringIO(), io.StringIO(), _ended_pid()
    saved = {k: os.environ.get(k) for k in [*env, "PGDRILL_KEY_FILE"]}
    os.environ.pop("PGDRILL_KEY_FILE", None)
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), mock.patch("os.getpid", return_value=pid):
            try:
                code = main(list(args))
            except Exception:  # noqa: BLE001 - reported as an unclear failure, not raised
                traceback.print_exc()
                code = 99
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _ended_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def cli_ok(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run backup-tools, require exit 0 and return its stdout stripped."""
    done = run_cli(*args, env=env, timeout=timeout)
    assert done.returncode == 0, f"backup-tools {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}"
    return done.stdout.strip()


def restore_fingerprint(url: str, backup: str, work: Path, *, pg: PgBin, env: dict[str, str] | None = None,
                        immediate: bool = True, dbname: str = "postgres",
                        passfile: Path | None = None) -> Fingerprint:  # fmt: skip
    """Restore a physical backup with the CLI into a new directory under work, start it, fingerprint dbname, stop it
    (passfile: the origin's, when its copy takes password logins)."""
    data, port = work / f"restored-{backup}-{'imm' if immediate else 'end'}", free_port()
    sock = Path(tempfile.mkdtemp(prefix="pgdrill-r-"))  # unix socket paths are at most 107 bytes
    target = ["--target-immediate"] if immediate else []
    cli_ok("restore", "--repo", url, "--to", str(data), "--backup", backup, *target, "--start", "--port", str(port),
           "--socket-dir", str(sock), env=env)  # fmt: skip
    try:
        login = {"passfile": str(passfile)} if passfile else {}
        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname=dbname, autocommit=True,
                             **login) as conn:  # fmt: skip
            return fingerprint(conn)
    finally:
        subprocess.run([str(pg.tool("pg_ctl")), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(sock, ignore_errors=True)


def tree_digest(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Relative path -> sha256 of every file under root (paths starting with a `skip` prefix left out)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if not rel.startswith(skip):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
