"""The drill history file (JSON lines, one drill result per line) and drill staleness: scenarios not passed lately."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from backup_tools.errors import UsageError
from backup_tools.units import format_seconds

HISTORY_VERSION = 1
# The fields of one history line; drill-results.json holds the full record.
FIELDS = (
    "run_id", "finished_at", "test", "scenario", "method", "verdict", "rto_seconds", "rpo_seconds",
    "target_rto_seconds", "target_rpo_seconds", "lost_commits", "reason", "git_commit", "host",
    "family", "data_source", "source",
)  # fmt: skip


@dataclass
class History:
    """Drill results read from a history file, oldest first, and the line numbers that could not be read."""

    records: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Staleness:
    """A scenario whose last passing drill is older than allowed, or that never passed."""

    scenario: str
    last_pass: datetime | None
    age: timedelta | None

    def __str__(self) -> str:
        if self.last_pass is None:
            return f"{self.scenario}: no passing drill on record"
        return (f"{self.scenario}: last passed {format_seconds(self.age.total_seconds())} ago "
                f"({self.last_pass:%Y-%m-%d %H:%M} UTC)")  # fmt: skip


def history_line(record: dict[str, Any]) -> dict[str, Any]:
    """The history line of one drill result: the versioned subset of fields trends and staleness need."""
    return {"history_version": HISTORY_VERSION, **{k: record.get(k) for k in FIELDS}}


def append_history(handle: BinaryIO, records: Iterable[dict[str, Any]]) -> int:
    """Append one line per record under an exclusive lock, in one write so concurrent runs do not interleave."""
    data = b"".join((json.dumps(history_line(r), default=str) + "\n").encode() for r in records)
    if data:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            handle.write(data)
            handle.flush()
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return data.count(b"\n")


def read_history(path: Path) -> History:
    """Read a history file; a missing file is an empty history, unreadable lines are skipped and counted."""
    try:
        return parse_history(path.read_text(errors="replace"))
    except FileNotFoundError:
        return History()
    except OSError as e:
        raise UsageError(f"cannot read drill history {path}: {e.strerror}; check --history-file") from e


def parse_history(text: str) -> History:
    """Parse history lines, oldest first; lines that are not drill results are skipped and their numbers kept."""
    history = History()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not record.get("scenario") or not _when(record):
                raise ValueError("not a drill result")
        except ValueError:
            history.bad_lines.append(number)
            continue
        history.records.append(record)
    history.records.sort(key=_when)
    return history


def _when(record: dict[str, Any]) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(record["finished_at"]))
    except (KeyError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def last_passes(records: Iterable[dict[str, Any]]) -> dict[str, datetime]:
    """The newest passing recovery drill's time per scenario (fault-detection drills recover nothing)."""
    out: dict[str, datetime] = {}
    for record in records:
        when = _when(record)
        if (
            record.get("verdict") == "pass"
            and record.get("family") != "fault-detection"
            and when
            and (record["scenario"] not in out or when > out[record["scenario"]])
        ):
            out[record["scenario"]] = when
    return out


def stale_scenarios(
    records: Iterable[dict[str, Any]],
    *,
    max_age: timedelta,
    scenarios: Iterable[str] | None = None,
    now: datetime | None = None,
) -> list[Staleness]:
    """Scenarios (the given ones, else every one on record) with no passing drill within max_age of now."""
    records = list(records)
    passes = last_passes(records)
    names = list(scenarios) if scenarios is not None else sorted({r["scenario"] for r in records})
    now = now or datetime.now(UTC)
    stale = []
    for name in names:
        last = passes.get(name)
        if last is None or now - last > max_age:
            stale.append(Staleness(name, last, now - last if last else None))
    return stale
