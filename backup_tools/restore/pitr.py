"""Point-in-time recovery: targets, choosing the backup for a target, and recovery settings (recovery.signal)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from backup_tools.catalog import BackupRecord
from backup_tools.errors import BackupNotFound, IntegrityCheckFailed, UsageError
from backup_tools.repo.base import Repository
from backup_tools.wal.lsn import parse_lsn

Action = Literal["promote", "pause", "shutdown"]


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops: one of time, lsn, xid, restore-point name or immediate (none: end of WAL)."""

    time: datetime | None = None
    lsn: str | None = None
    xid: str | None = None
    name: str | None = None
    immediate: bool = False
    inclusive: bool = True
    action: Action = "promote"
    timeline: str = "latest"

    def __post_init__(self) -> None:
        chosen = [k for k in ("time", "lsn", "xid", "name") if getattr(self, k) is not None] + (
            ["immediate"] if self.immediate else []
        )
        if len(chosen) > 1:
            raise UsageError(f"give one recovery target, not {' and '.join(chosen)}")
        if self.time is not None and self.time.tzinfo is None:
            raise UsageError(f"recovery target time {self.time} has no time zone; give e.g. 2026-11-22T10:00:00+00:00")

    def settings(self) -> dict[str, str]:
        """PostgreSQL settings for this target."""
        out: dict[str, str] = {"recovery_target_timeline": self.timeline}
        if self.time is not None:
            out["recovery_target_time"] = self.time.isoformat(sep=" ")
        elif self.lsn is not None:
            out["recovery_target_lsn"] = self.lsn
        elif self.xid is not None:
            out["recovery_target_xid"] = str(self.xid)
        elif self.name is not None:
            out["recovery_target_name"] = self.name
        elif self.immediate:
            out["recovery_target"] = "immediate"
        else:
            return out
        out["recovery_target_inclusive"] = "on" if self.inclusive else "off"
        out["recovery_target_action"] = self.action
        return out

    def describe(self) -> str:
        """A short human description, e.g. 'before xid 1234'."""
        word = "up to and including" if self.inclusive else "just before"
        for key in ("time", "lsn", "xid", "name"):
            value = getattr(self, key)
            if value is not None:
                return f"{word} {key} {value}"
        return "the end of the backup (immediate)" if self.immediate else "the end of the archived WAL"


def quote_setting(value: str) -> str:
    """Quote a value for postgresql.conf."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def choose_backup(
    records: list[BackupRecord], target: RecoveryTarget | None, *, backup_id: str = "latest"
) -> BackupRecord:
    """The backup to restore for a target: the one asked for, else the newest good physical one that ended before it."""
    physical = [r for r in records if r.kind in ("full", "incremental")]
    if backup_id != "latest":
        found = next((r for r in records if r.id == backup_id), None)
        if found is None:
            raise BackupNotFound(f"no backup {backup_id!r} in the repository; run `backup-tools list` for the ids")
        if not found.is_good:
            raise BackupNotFound(f"backup {backup_id} is {found.status}, not DONE; restore another backup")
        if target is not None and not _ended_before(found, target):
            raise UsageError(
                f"recovery target {target.describe()} is before the end of backup {found.id} "
                f"({found.stop_time.isoformat() if found.stop_time else '?'}, LSN {found.stop_lsn}); "
                "pick an older backup (or omit --backup) or a later target"
            )
        return found
    good = [r for r in physical if r.is_good]
    if not good:
        raise BackupNotFound("the repository has no finished physical backup; take one with `backup-tools backup`")
    if target is None or target.immediate:
        return good[-1]
    if target.name is not None:
        return good[0]  # a restore point's position is not recorded: replay from the oldest backup
    fitting = [r for r in good if _ended_before(r, target)]
    if not fitting:
        oldest = good[0]
        raise BackupNotFound(
            f"recovery target {target.describe()} is before the oldest backup {oldest.id} finished "
            f"({oldest.stop_time.isoformat() if oldest.stop_time else '?'}, LSN {oldest.stop_lsn}); "
            "no backup in this repository can restore to that point: choose a later target or another repository"
        )
    return fitting[-1]


def _ended_before(record: BackupRecord, target: RecoveryTarget) -> bool:
    """Whether a backup's consistent point (stop) is at or before the target."""
    if target.time is not None:
        return record.stop_time is not None and record.stop_time <= target.time
    if target.lsn is not None:
        return record.stop_lsn is not None and parse_lsn(record.stop_lsn) <= parse_lsn(target.lsn)
    if target.xid is not None:
        recorded = record.options.get("next_xid")
        if recorded is None:
            return True
        want, have = int(target.xid), int(recorded)
        return (have & 0xFFFFFFFF if want <= 0xFFFFFFFF else have) <= want
    return True


def backup_chain(repo: Repository, record: BackupRecord) -> list[BackupRecord]:
    """The full backup and incrementals (oldest first) needed to restore record."""
    chain = [record]
    while chain[0].kind == "incremental":
        child = chain[0]
        if not child.parent:
            raise IntegrityCheckFailed(f"incremental backup {child.id} records no parent; its catalog is damaged")
        try:
            parent = repo.read_catalog(child.parent)
        except BackupNotFound as e:
            raise BackupNotFound(
                f"backup {record.id} needs its parent {child.parent}, which is missing from {repo.url} "
                "(deleted or pruned); restore another backup (`backup-tools list`)"
            ) from e
        if not parent.is_good:
            raise BackupNotFound(
                f"parent {parent.id} of incremental {child.id} is {parent.status}; restore another backup"
            )
        chain.insert(0, parent)
    return chain


def recovery_settings(*, restore_command: str, target: RecoveryTarget | None, archive: bool) -> dict[str, str]:
    """Settings that make a restored data directory replay archived WAL to the target (PostgreSQL 12+)."""
    out = {"restore_command": restore_command}
    if not archive:
        out |= {"archive_mode": "off"}
    out |= (target or RecoveryTarget()).settings()
    return out


def configure_recovery(data_dir: Path, settings: dict[str, str]) -> None:
    """Append settings to postgresql.auto.conf and create recovery.signal; never writes recovery.conf."""
    for stale in ("recovery.conf", "standby.signal", "postmaster.pid"):
        (data_dir / stale).unlink(missing_ok=True)
    lines = "".join(f"{k} = {quote_setting(v)}\n" for k, v in settings.items())
    with open(data_dir / "postgresql.auto.conf", "a") as f:
        f.write("# added by backup-tools restore\n" + lines)
    (data_dir / "recovery.signal").touch()
