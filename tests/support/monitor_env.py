"""Repository histories for the monitor tests: catalog records and WAL objects written with chosen catalog times."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from backup_tools.catalog import BackupRecord, FileEntry
from backup_tools.repo.base import FileRepository
from backup_tools.repo.objects import store_object
from backup_tools.wal.lsn import format_lsn, segment_name_from_number

SEGMENT = 16 * 1024 * 1024
MB = 1_000_000


class RepoHistory:
    """Writes backups and archived WAL into a FileRepository as if they had happened hours before `now`."""

    def __init__(self, root: Path, now: datetime):
        root.mkdir(parents=True, exist_ok=True)
        self.repo = FileRepository(root)
        self.now = now
        self._ids = itertools.count(1)
        self._scratch = root.parent / f".{root.name}-scratch"
        self._scratch.mkdir(exist_ok=True)

    @property
    def url(self) -> str:
        """The repository's file:// URL."""
        return self.repo.url

    def backup(
        self,
        *,
        hours_ago: float,
        kind: str = "logical",
        status: str = "DONE",
        size: int = 50 * MB,
        verified_hours_ago: float | None = None,
        segment: int | None = None,
        timeline: int = 1,
        **options: Any,
    ) -> BackupRecord:
        """A catalog record; physical backups get start/stop LSNs inside WAL segment `segment` (default 2)."""
        start = self.now - timedelta(hours=hours_ago)
        record = BackupRecord(
            id=f"{start:%Y%m%dT%H%M%SZ}-{kind}-{next(self._ids):04x}", kind=kind, status=status,  # type: ignore[arg-type]
            start_time=start, stop_time=start + timedelta(minutes=5) if status == "DONE" else None,
            files=(FileEntry("data", size, "0" * 64),),
            verified_at=self.now - timedelta(hours=verified_hours_ago) if verified_hours_ago is not None else None,
            options=options,
        )  # fmt: skip
        if kind != "logical":
            seg = 2 if segment is None else segment
            record = record.with_changes(
                start_lsn=format_lsn(seg * SEGMENT + 0x28), stop_lsn=format_lsn(seg * SEGMENT + 0x1000),
                timeline=timeline,
            )  # fmt: skip
        self.repo.write_catalog(record)
        return record

    def wal(self, *segnos: int, timeline: int = 1, hours_ago: float = 0.1) -> list[str]:
        """Archive segments (as wal-push stores them, with a pushed_at header) pushed hours_ago."""
        names = []
        for segno in segnos:
            name = segment_name_from_number(timeline, segno)
            src = self._scratch / name
            src.write_bytes(b"\0" * 128)
            pushed = (self.now - timedelta(hours=hours_ago)).isoformat()
            store_object(self.repo, f"wal/{name}", src, codec="none", sealing=None, scope="wal",
                         envelope={"name": name, "system_identifier": None, "pushed_at": pushed})  # fmt: skip
            names.append(name)
        return names
