"""Local TCP ports for servers this process starts (restore tests, drills), reserved across processes.

A port found free is released before the server binds it, so two processes (pytest-xdist workers, a restore test
beside a drill) could be handed the same one. Each port handed out is also reserved in a per-user directory of
files named after the port and holding the owner's pid, under an flock; a reservation lasts until its process ends.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from backup_tools.errors import BackupToolsError

_handed_out: set[int] = set()
_reserved: list[Path] = []


def reservation_dir() -> Path:
    """Where this user's processes reserve ports: $PGDRILL_PORTS_DIR or <tmp>/pgdrill-ports-<uid>."""
    return Path(os.environ.get("PGDRILL_PORTS_DIR") or Path(tempfile.gettempdir()) / f"pgdrill-ports-{os.getuid()}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on and no live process of this user has reserved."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out and _reserve(port):
            _handed_out.add(port)
            return port
    raise BackupToolsError("no free TCP port found on 127.0.0.1; too many servers running?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[bool]:
    """Hold the directory's lock; yields False when the directory is unusable (then only this process is guarded)."""
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            yield False  # a symlink or someone else's directory: never trust it
            return
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


def _reserve(port: int) -> bool:
    """Claim the port for this process; False when a live process holds it."""
    directory = reservation_dir()
    with _locked(directory) as usable:
        if not usable:
            return True
        path = directory / str(port)
        try:
            owner = int(path.read_text().strip() or 0)
        except (OSError, ValueError):
            owner = 0
        if owner and owner != os.getpid() and _alive(owner):
            return False
        try:
            path.write_text(f"{os.getpid()}\n")
        except OSError:
            return True
    _reserved.append(path)
    return True


@atexit.register
def _release() -> None:
    """Remove this process's reservations as it exits (a killed process's are taken over once its pid is gone)."""
    for path in _reserved:
        with contextlib.suppress(OSError, ValueError):
            if int(path.read_text().strip()) == os.getpid():
                path.unlink()


def port_in_use(port: int) -> bool:
    """Tell whether something already listens on 127.0.0.1:port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
