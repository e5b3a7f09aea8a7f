"""Fetch the WAL a restored backup needs first into its pg_wal before start, in-process and verified.

PostgreSQL runs restore_command once per file; with wal-fetch each call is a Python start (~0.1 s).
restore() therefore fetches, checksum-verified like wal-fetch, the backup's own segments (start..stop),
its timeline history and a few segments after it (recovery reads ahead) into PREFETCH_DIR, and the
restore_command becomes a small sh wrapper: a prefetched file is copied into place (recovery asks for
the last segment twice), anything else is fetched by wal-fetch as before. A failed copy exits 200, so
recovery stops instead of ending early. PREFETCH_DIR sits inside pg_wal, which pg_basebackup never
copies and PostgreSQL ignores; start_restored removes it once the server is promoted (a server started
another way keeps those few segments there until someone deletes the directory).

`restore --start` goes further: while the server recovers, a WalFollower keeps the next FOLLOW_AHEAD archived
segments of the backup's timeline fetched ahead of the one recovery restored last (read from the server log),
so a long point-in-time replay copies files instead of starting Python once per segment. Each is fetched
under a hidden name and renamed into place only once fully checked; segments recovery has passed are deleted,
FOLLOW_BEHIND of them kept for the end of recovery, which reads its last segment again. A segment the follower
cannot fetch is left to recovery's own wal-fetch, which reports why.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_tools.repo.base import Repository
from backup_tools.wal.archive import WAL_FETCH_ABORT_EXIT, repo_system_identifier, wal_fetch
from backup_tools.wal.lsn import classify, parse_lsn, segments_between

PREFETCH_DIR = "pg_wal/pgdrill-prefetch"
AHEAD = 4  # archived segments after the stop segment: recovery reads ahead (across several short, switched ones)
WORKERS = 2
FOLLOW_AHEAD = 4  # segments waiting ahead of recovery while it runs (16 MiB each by default)
FOLLOW_BEHIND = 4  # passed segments kept: the end of recovery reads its last one again, read-ahead may be past it
_RESTORED = re.compile(rb'restored log file "([0-9A-F]{24})" from archive')


@dataclass(frozen=True)
class FollowPlan:
    """What a started restore keeps fetching: the archived segments after the prefetched ones, in order."""

    names: tuple[str, ...]
    prefetched: tuple[str, ...]
    key_file: str | None = None


def _backup_segments(record: Any) -> list[str]:
    """The segments holding a backup's own WAL (start..stop), [] when the record lacks its range."""
    if not record.start_lsn or not record.stop_lsn or not record.timeline:
        return []
    size = int(record.options.get("wal_segment_size", 16 * 1024 * 1024))
    start, stop = parse_lsn(record.start_lsn), parse_lsn(record.stop_lsn)
    return segments_between(record.timeline, start, max(start, stop), wal_segment_size=size)


def _later_segments(record: Any, archived: Iterable[str], after: str) -> list[str]:
    """The archived segments of the backup's timeline named after `after`, in order."""
    return sorted(n for n in archived if (w := classify(n)) and w.kind == "segment" and w.timeline == record.timeline
                  and n > after)  # fmt: skip


def wal_to_prefetch(record: Any, archived: Iterable[str], *, ahead: int = AHEAD) -> list[str]:
    """The archived WAL a restore of record asks for first: its history file, start..stop segments, `ahead` more."""
    present = set(archived)
    needed = _backup_segments(record)
    if not needed:
        return []
    names = [n for n in needed if n in present] + _later_segments(record, present, needed[-1])[:ahead]
    history = f"{record.timeline:08X}.history"
    return ([history] if history in present else []) + names


def wal_to_follow(record: Any, archived: Iterable[str], prefetched: list[str], *, key_file: str | None) -> FollowPlan:
    """What a WalFollower fetches after the prefetched files: the rest of the backup's timeline in the archive."""
    needed = _backup_segments(record)
    if not needed:
        return FollowPlan((), tuple(prefetched), key_file)
    last = max([needed[-1], *(n for n in prefetched if len(n) == 24)])
    return FollowPlan(tuple(_later_segments(record, archived, last)), tuple(prefetched), key_file)


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


class WalFollower:
    """Keeps archived segments fetched ahead of a recovering server into PREFETCH_DIR (see the module docstring)."""

    def __init__(self, repo: Repository, plan: FollowPlan, data_dir: Path, *, ahead: int = FOLLOW_AHEAD):
        self._repo, self._plan, self._dir, self._ahead = repo, plan, data_dir / PREFETCH_DIR, ahead
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: Path | None = None
        self._offset = 0
        self.fetched = 0
        self.error: str | None = None

    def start(self, logfile: Path, offset: int) -> None:
        """Follow recovery as the server's log (from offset) shows it."""
        if not self._plan.names:
            return
        self._log, self._offset = logfile, offset
        self._thread = threading.Thread(target=self._run, name="wal-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop fetching and wait for the fetch under way; nothing half-written is left behind."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as e:  # noqa: BLE001 - recovery's own wal-fetch meets the same object and says why
            self.error = str(e)

    def _follow(self) -> None:
        pending = deque(self._plan.names)
        waiting = deque(n for n in self._plan.prefetched if len(n) == 24)  # in PREFETCH_DIR, not yet passed
        passed: deque[str] = deque()
        owner = repo_system_identifier(self._repo)
        asked = ""
        while not self._stop.is_set():
            asked = max(asked, self._last_restored())
            while waiting and waiting[0] < asked:
                passed.append(waiting.popleft())
            while len(passed) > FOLLOW_BEHIND:
                (self._dir / passed.popleft()).unlink(missing_ok=True)
            while pending and pending[0] <= asked:
                pending.popleft()  # recovery got there first and fetched it itself
            if not pending:
                return
            if len(waiting) >= self._ahead:
                self._stop.wait(0.05)
                continue
            name = pending.popleft()
            hidden = self._dir / f".{name}.follow"
            wal_fetch(name, hidden, repo=self._repo, key_file=self._plan.key_file, system_identifier=owner)
            os.rename(hidden, self._dir / name)  # checked whole before the restore_command can see it
            waiting.append(name)
            self.fetched += 1

    def _last_restored(self) -> str:
        """The newest WAL file name the server log says recovery restored since the last look ("" if none)."""
        assert self._log is not None
        try:
            with open(self._log, "rb") as f:
                f.seek(self._offset)
                text = f.read()
        except OSError:
            return ""
        end = text.rfind(b"\n") + 1
        self._offset += end
        found = _RESTORED.findall(text[:end])
        return found[-1].decode() if found else ""
