"""Thresholds of `backup-tools check` from [tool.pgdrill.monitor] in a TOML file, with sane defaults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from backup_tools.config import load_pgdrill_section
from backup_tools.errors import UsageError
from backup_tools.units import parse_duration

SERIES_KEYS = ("physical", "logical", "full", "incremental")
RECEIVER_KEYS = ("email", "webhook")


@dataclass(frozen=True)
class MonitorConfig:
    """Check thresholds; durations are timedeltas, receivers stay raw for monitor/alerts.py to read."""

    max_age: timedelta = timedelta(hours=26)
    max_age_by_series: dict[str, timedelta] = field(default_factory=dict)
    failed_after: int = 1
    stuck_after: timedelta = timedelta(hours=6)
    size_kinds: tuple[str, ...] = ("logical", "full")
    size_window: int = 7
    size_min_history: int = 3
    size_min_ratio: float = 0.5
    size_max_ratio: float = 2.0
    wal_max_age: timedelta = timedelta(hours=1)
    verify_max_age: timedelta = timedelta(days=8)
    restore_test_max_age: timedelta = timedelta(days=8)
    bucket_max_age: timedelta = timedelta(hours=26)
    capacity_warn_percent: float = 80.0
    capacity_critical_percent: float = 90.0
    s3_quota_bytes: int | None = None
    drill_history: Path | None = None
    drill_max_age: timedelta = timedelta(days=30)
    drill_scenarios: tuple[str, ...] | None = None
    state_file: Path | None = None
    receivers: dict[str, Any] = field(default_factory=dict)

    def with_changes(self, **changes: Any) -> MonitorConfig:
        """A copy with some settings replaced (command-line overrides)."""
        return replace(self, **changes)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], *, base_dir: Path = Path(".")) -> MonitorConfig:
        """Build from a [tool.pgdrill.monitor] table; relative paths are relative to base_dir."""
        known = {f for f in cls.__dataclass_fields__ if f not in ("max_age_by_series", "receivers", "s3_quota_bytes")}
        known.add("s3_quota")
        unknown = sorted(set(doc) - known - set(RECEIVER_KEYS))
        if unknown:
            raise UsageError(
                f"unknown key(s) {', '.join(unknown)} in [tool.pgdrill.monitor]; known keys: "
                f"{', '.join(sorted(known | set(RECEIVER_KEYS)))}"
            )
        values: dict[str, Any] = {"receivers": {k: doc[k] for k in RECEIVER_KEYS if k in doc}}
        if "max_age" in doc:
            if isinstance(doc["max_age"], Mapping):
                bad = sorted(set(doc["max_age"]) - set(SERIES_KEYS))
                if bad:
                    raise UsageError(f"max_age keys must be among {', '.join(SERIES_KEYS)}, not {', '.join(bad)}")
                values["max_age_by_series"] = {k: _duration(f"max_age.{k}", v) for k, v in doc["max_age"].items()}
            else:
                values["max_age"] = _duration("max_age", doc["max_age"])
        for key in ("stuck_after", "wal_max_age", "verify_max_age", "drill_max_age", "restore_test_max_age",
                    "bucket_max_age"):  # fmt: skip
            if key in doc:
                values[key] = _duration(key, doc[key])
        for key in ("failed_after", "size_window", "size_min_history"):
            if key in doc:
                values[key] = _number(key, doc[key], integer=True)
        for key in ("size_min_ratio", "size_max_ratio", "capacity_warn_percent", "capacity_critical_percent"):
            if key in doc:
                values[key] = _number(key, doc[key], integer=False)
        if "s3_quota" in doc:
            values["s3_quota_bytes"] = _size("s3_quota", doc["s3_quota"])
        if "size_kinds" in doc:
            kinds = doc["size_kinds"]
            if not isinstance(kinds, list) or not set(kinds) <= {"logical", "full", "incremental"}:
                raise UsageError("size_kinds must be a list of logical, full, incremental; e.g. ['logical', 'full']")
            values["size_kinds"] = tuple(kinds)
        if "drill_scenarios" in doc:
            names = doc["drill_scenarios"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise UsageError(
                    "drill_scenarios must be a list of scenario names, e.g. ['corruption', 'complete-loss']"
                )
            values["drill_scenarios"] = tuple(names)
        for key in ("drill_history", "state_file"):
            if key in doc:
                if not isinstance(doc[key], str) or not doc[key]:
                    raise UsageError(f"{key} in [tool.pgdrill.monitor] must be a file path")
                values[key] = base_dir / Path(doc[key]).expanduser()
        return cls(**values)

    @classmethod
    def load(cls, path: Path | None) -> MonitorConfig:
        """Read [tool.pgdrill.monitor] (or a top-level [monitor]) from a TOML file; None gives the defaults."""
        if path is None:
            return cls()
        section = load_pgdrill_section(path, "monitor", what="monitor config")
        return cls.from_mapping(section or {}, base_dir=path.resolve().parent)


def _duration(key: str, value: Any) -> timedelta:
    if isinstance(value, bool):
        raise UsageError(f"{key} must be a duration such as '26h', '30min' or '8d', not {value!r}")
    try:
        parsed = parse_duration(value)
    except UsageError as e:
        raise UsageError(f"{key} in [tool.pgdrill.monitor]: {e}") from e
    if parsed <= timedelta(0):
        raise UsageError(f"{key} must be a positive duration, e.g. '26h'")
    return parsed


def _number(key: str, value: Any, *, integer: bool) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value < (1 if integer else 0):
        kind = "a whole number >= 1" if integer else "a non-negative number"
        raise UsageError(f"{key} in [tool.pgdrill.monitor] must be {kind}, not {value!r}")
    return value


_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:i?B)?\s*", re.I)


def _size(key: str, value: Any) -> int:
    """A byte size: a whole number of bytes or a string like '500GiB' or '2TB' (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if m is None or float(m[1]) <= 0:
        raise UsageError(f"{key} in [tool.pgdrill.monitor] must be a size such as '500GiB' or '2TB', not {value!r}")
    return int(float(m[1]) * 1024 ** " KMGTP".index(m[2].upper() or " "))
