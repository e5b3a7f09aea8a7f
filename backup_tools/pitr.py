"""Point-in-time recovery: recovery targets written the PostgreSQL 12+ way (recovery.signal + settings)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from backup_tools.errors import UsageError

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
