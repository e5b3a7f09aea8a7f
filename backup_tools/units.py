"""Parse and format human durations such as "250ms", "30s", "15min", "4h", "1d" or "1h30min"; format byte sizes."""

from __future__ import annotations

import re
from datetime import timedelta

from backup_tools.errors import UsageError

_UNITS = {
    "ms": 0.001, "msec": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*")


def parse_duration(text: str | int | float) -> timedelta:
    """Parse a duration; a bare number means seconds; anything else unparseable is a UsageError."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return timedelta(seconds=text)
    if not isinstance(text, str):
        raise UsageError(f"invalid duration {text!r}: use a string such as '250ms', '30s', '15min', '4h' or '1d'")
    stripped = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
        return timedelta(seconds=float(stripped))
    total, pos = 0.0, 0
    while pos < len(stripped):
        match = _PART.match(stripped, pos)
        if not match or match.group(2).lower() not in _UNITS:
            raise UsageError(
                f"invalid duration {text!r}: use a number and a unit (ms, s, min, h, d, w), "
                "e.g. '250ms', '30s', '15min', '4h', '1h30min'"
            )
        total += float(match.group(1)) * _UNITS[match.group(2).lower()]
        pos = match.end()
    if pos == 0:
        raise UsageError(f"invalid duration {text!r}: it is empty; use e.g. '15min'")
    return timedelta(seconds=total)


def format_seconds(seconds: float | None) -> str:
    """Format seconds for a report: '420 ms', '5.2 ms', '1.42 s', '12.3 s', '4 min 05 s', '2 h 03 min'."""
    if seconds is None:
        return "n/a"
    if seconds < 1:  # a 1 ms target must not print as "0.00 s"
        ms = seconds * 1000
        return f"{ms:.0f} ms" if ms >= 10 or ms == 0 else f"{ms:.2g} ms"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def format_bytes(n: float) -> str:
    """Format a byte count in binary units for a report: '512 B', '1.5 KiB', '3.0 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
