"""Fetch the WAL a restored backup needs first into its pg_wal before start, in-process and verified.

PostgreSQL runs restore_command once per file; with wal-fetch each call is a Python start (~0.1 s).
restore() therefore fetches, checksum-verified like wal-fetch, the backup's own segments (start..stop),
its timeline history and a few segments after it (recovery reads ahead) into PREFETCH_DIR, and the
restore_command becomes a small sh wrapper: a prefetched file is copied into place (recovery asks for
the last segment twice), anything else is fetched by wal-fetch as before. A failed copy exits 200, so
recovery stops instead of ending early. PREFETCH_DIR sits inside pg_wal, which pg_basebackup never
copies and PostgreSQL ignores; start_restored removes it once the server is promoted (a server started
another way keeps those few segments there until someone deletes the directory).
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from backup_tools.repo.base import Repository
from backup_tools.wal.archive import WAL_FETCH_ABORT_EXIT, repo_system_identifier, wal_fetch
from backup_tools.wal.lsn import classify, parse_lsn, segments_between

PREFETCH_DIR = "pg_wal/pgdrill-prefetch"
AHEAD = 4  # archived segments after the stop segment: recovery reads ahead (across several short, switched ones)
WORKERS = 2


def wal_to_prefetch(record: Any, archived: Iterable[str], *, ahead: int = AHEAD) -> list[str]:
    """The archived WAL a restore of record asks for first: its history file, start..stop segments, `ahead` more."""
    present = set(archived)
    if not record.start_lsn or not record.stop_lsn or not record.timeline:
        return []
    size = int(record.options.get("wal_segment_size", 16 * 1024 * 1024))
    start, stop = parse_lsn(record.start_lsn), parse_lsn(record.stop_lsn)
    needed = segments_between(record.timeline, start, max(start, stop), wal_segment_size=size)
    later = sorted(n for n in present if (w := classify(n)) and w.kind == "segment" and w.timeline == record.timeline
                   and n > needed[-1])  # fmt: skip
    names = [n for n in needed if n in present] + later[:ahead]
    history = f"{record.timeline:08X}.history"
    return ([history] if history in present else []) + names


def prefetch_wal(repo: Repository, names: list[str], data_dir: Path, *, key_file: str | None = None) -> int:
    """Fetch names (verified) into data_dir/PREFETCH_DIR with a few threads; return the bytes written."""
    target = data_dir / PREFETCH_DIR
    target.parent.mkdir(mode=0o700, exist_ok=True)
    target.mkdir(mode=0o700, exist_ok=True)
    if not names:
        return 0
    owner = repo_system_identifier(repo)

    def fetch(name: str) -> int:
        return wal_fetch(name, target / name, repo=repo, key_file=key_file, system_identifier=owner)

    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="wal-prefetch") as pool:
        sizes = list(pool.map(fetch, names))
    return sum(sizes)


def prefetching_command(fetch: str, *, wal_dir: Path | None = None) -> str:
    """A restore_command copying a prefetched file into place, else running fetch (the wal-fetch command).

    wal_dir (a file:// repository's wal/ directory): a name absent from a directory that exists and can be
    searched is answered "not archived" (exit 1) by the shell, as wal-fetch would after the same stat.
    """
    src = f"{PREFETCH_DIR}/%f"
    script = f"if [ -f {src} ]; then cp {src} %p || exit {WAL_FETCH_ABORT_EXIT}; "
    if wal_dir is not None:
        where = shlex.quote(str(wal_dir))
        script += f"elif [ -d {where} ] && [ -x {where} ] && [ ! -e {where}/%f ]; then exit 1; "
    return script + f"else exec {fetch}; fi"


def remove_prefetched(data_dir: Path) -> None:
    """Remove prefetched WAL recovery did not ask for."""
    shutil.rmtree(data_dir / PREFETCH_DIR, ignore_errors=True)
