"""Backup catalog records: one JSON document per backup, written last and atomically."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

BACKUPS = "backups"
WAL = "wal"
IDENTITY_KEY = "identity.json"
Kind = Literal["logical", "full", "incremental"]
Status = Literal["STARTED", "DONE", "FAILED"]
CATALOG_NAME = "catalog.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    """One stored object of a backup, with the checksum it must match on read."""

    name: str
    size: int
    sha256: str
    codec: str = "none"
    plain_size: int | None = None
    plain_sha256: str | None = None


_BYTES_REPR = re.compile(r"""^b(['"])(\d+)\1$""")


def clean_system_identifier(value: object) -> str | None:
    """A system identifier as digits: also reads "b'7714…'", written by versions that stored SQL_ASCII bytes' repr."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("ascii")
    text = str(value)
    poisoned = _BYTES_REPR.match(text)
    return poisoned.group(2) if poisoned else text


@dataclass(frozen=True)
class BackupRecord:
    """Everything known about one backup; times are timezone-aware UTC."""

    id: str
    kind: Kind
    status: Status
    start_time: datetime
    stop_time: datetime | None = None
    parent: str | None = None
    start_lsn: str | None = None
    stop_lsn: str | None = None
    timeline: int | None = None
    pg_version: str | None = None
    system_identifier: str | None = None
    files: tuple[FileEntry, ...] = ()
    fingerprints: dict[str, Any] = field(default_factory=dict)
    verified_at: datetime | None = None
    encryption: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Total stored bytes of the backup's objects."""
        return sum(f.size for f in self.files)

    @property
    def is_good(self) -> bool:
        """A finished backup that may be restored from."""
        return self.status == "DONE"

    def with_changes(self, **changes: Any) -> BackupRecord:
        """Return a copy with some fields replaced."""
        return replace(self, **changes)

    def to_json(self) -> str:
        """Serialise to the catalog's JSON form."""
        doc = asdict(self)
        doc["format"] = FORMAT_VERSION
        for key in ("start_time", "stop_time", "verified_at"):
            if doc[key] is not None:
                doc[key] = doc[key].isoformat()
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> BackupRecord:
        """Parse the catalog's JSON form."""
        doc = json.loads(text)
        doc.pop("format", None)
        for key in ("start_time", "stop_time", "verified_at"):
            if doc.get(key) is not None:
                doc[key] = datetime.fromisoformat(doc[key])
        doc["files"] = tuple(FileEntry(**f) for f in doc.get("files", ()))
        doc["system_identifier"] = clean_system_identifier(doc.get("system_identifier"))
        return cls(**doc)


def new_backup_id(now: datetime, kind: Kind) -> str:
    """A sortable, readable backup id such as 20261122T101500Z-full-3f9a."""
    import secrets

    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{kind}-{secrets.token_hex(2)}"


def sort_by_catalog_time(records: list[BackupRecord]) -> list[BackupRecord]:
    """Order backups by their recorded start time (never by file mtime), oldest first."""
    return sorted(records, key=lambda r: (r.start_time, r.id))
