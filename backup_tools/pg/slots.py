"""A temporary replication slot held by a psql session: it keeps the WAL a backup needs until the session ends.

`pg_basebackup -X fetch` reads the backup's WAL only at its end; on a busy server a checkpoint could recycle it
first. A temporary physical slot created with immediately_reserve pins WAL from the current redo point, and
belongs to the session that created it: PostgreSQL drops it when the session ends, also when this process is
killed (psql then reads end-of-file on its stdin and exits). No driver is loaded: psql holds the session.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

from backup_tools.pg.bin import PgBin
from backup_tools.pg.run import merged_env, redact

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def wal_held(dsn: str, pg: PgBin, *, log: Callable[[str], Any] = logger.info) -> Iterator[str | None]:
    """Hold a temporary replication slot while the block runs; yield its name, or None when it cannot be made."""
    from backup_tools.pg.conninfo import libpq_env

    name = f"pgdrill_backup_{secrets.token_hex(4)}"  # [a-z0-9_] only: safe inside the literal below
    argv = [str(pg.tool("psql")), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "--no-password"]
    with libpq_env(dsn) as env:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=merged_env(env), text=True)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(f"SELECT pg_create_physical_replication_slot('{name}', true, true) IS NOT NULL;\n")
        proc.stdin.flush()
        held = proc.stdout.readline().strip() == "t"
    except OSError:
        held = False
    if not held:
        _end(proc)
        reason = redact(" ".join(proc.stderr.read().split()))[:300] or "psql ended"
        log(f"### No temporary replication slot ({reason}): on a busy server the WAL this backup fetches at its end "
            "could be recycled first, and the backup then fails; a REPLICATION role and a free max_replication_slots "
            "avoid that")  # fmt: skip
        yield None
        return
    try:
        yield name
    finally:
        _end(proc)  # the session ends: PostgreSQL drops its temporary slot


def _end(proc: subprocess.Popen[str]) -> None:
    """Close psql's stdin (it exits at end of input) and reap it; kill it if it does not go."""
    with contextlib.suppress(OSError):
        proc.stdin.close()  # type: ignore[union-attr]
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
