"""LSN and WAL file name arithmetic: parse/format LSNs, name segments, classify archive names, find gaps."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from backup_tools.errors import UsageError

DEFAULT_WAL_SEGMENT_SIZE = 16 * 1024 * 1024
MIN_WAL_SEGMENT_SIZE = 1024 * 1024
MAX_WAL_SEGMENT_SIZE = 1024 * 1024 * 1024
MAX_LSN = (1 << 64) - 1
MAX_TIMELINE = (1 << 32) - 1
# Suffixes an archive may append to a WAL file name (compression, encryption); classify() accepts them.
STORAGE_SUFFIXES = ("zst", "gz", "lz4", "bz2", "xz", "br", "enc", "age", "gpg")

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_SUFFIX = r"(?P<suffix>(?:\.(?:" + "|".join(STORAGE_SUFFIXES) + r"))*)"
_WAL_RE = re.compile(
    r"^(?:(?P<segment>[0-9A-F]{24})(?:(?P<partial>\.partial)|\.(?P<offset>[0-9A-F]{8})\.backup)?"
    r"|(?P<history>[0-9A-F]{8})\.history)" + _SUFFIX + "$"
)

WalKind = Literal["segment", "partial", "backup", "history"]


class Segment(NamedTuple):
    """A WAL segment: its timeline, segment number and the LSN where it starts."""

    timeline: int
    segno: int
    start_lsn: int


@dataclass(frozen=True)
class WalFile:
    """A recognised WAL archive name: its kind, timeline and (except history files) segment name."""

    name: str
    kind: WalKind
    timeline: int
    segment: str | None
    suffix: str = ""


@dataclass(frozen=True)
class WalGap:
    """Missing segments first..last (inclusive) on one timeline."""

    timeline: int
    first: str
    last: str
    count: int


def parse_lsn(text: str) -> int:
    """Parse an LSN such as '16/B374D848' into a 64-bit integer."""
    m = _LSN_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise UsageError(f"invalid LSN {text!r}: expected two hex numbers like '16/B374D848' (pg_current_wal_lsn())")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    """Format a 64-bit LSN as PostgreSQL prints it ('16/B374D848')."""
    if not 0 <= lsn <= MAX_LSN:
        raise UsageError(f"LSN {lsn} is outside 0..2^64-1; pass an unsigned 64-bit position")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def check_segment_size(wal_segment_size: int) -> int:
    """Return wal_segment_size if PostgreSQL allows it (a power of two from 1 MiB to 1 GiB)."""
    ok = MIN_WAL_SEGMENT_SIZE <= wal_segment_size <= MAX_WAL_SEGMENT_SIZE
    if not ok or wal_segment_size & (wal_segment_size - 1):
        raise UsageError(
            f"invalid wal_segment_size {wal_segment_size}: must be a power of two from 1 MiB to 1 GiB; "
            "use `SHOW wal_segment_size` on the server (in bytes)"
        )
    return wal_segment_size


def _check_timeline(timeline: int) -> int:
    if not 1 <= timeline <= MAX_TIMELINE:
        raise UsageError(f"invalid timeline {timeline}: must be 1..{MAX_TIMELINE} (pg_control_checkpoint())")
    return timeline


def segments_per_log(wal_segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> int:
    """Number of segments per 4 GiB 'log' (the middle 8 hex digits of a segment name)."""
    return 0x100000000 // check_segment_size(wal_segment_size)


def segment_number(lsn: int, *, wal_segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> int:
    """Number of the segment holding the byte at lsn (PostgreSQL's XLByteToSeg)."""
    format_lsn(lsn)
    return lsn // check_segment_size(wal_segment_size)


def segment_name_from_number(timeline: int, segno: int, *, wal_segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> str:
    """WAL file name (24 hex digits: timeline, log, seg) of a segment number."""
    per_log = segments_per_log(wal_segment_size)
    if not 0 <= segno <= MAX_LSN // wal_segment_size:
        raise UsageError(f"segment number {segno} is out of range for wal_segment_size {wal_segment_size}")
    return f"{_check_timeline(timeline):08X}{segno // per_log:08X}{segno % per_log:08X}"


def segment_name(timeline: int, lsn: int, *, wal_segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> str:
    """WAL file name of the segment holding lsn on timeline."""
    segno = segment_number(lsn, wal_segment_size=wal_segment_size)
    return segment_name_from_number(timeline, segno, wal_segment_size=wal_segment_size)


def parse_segment_name(name: str, *, wal_segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> Segment:
    """Timeline, segment number and start LSN of a 24-hex-digit segment name (also .partial/.backup names)."""
    wal = classify(name)
    if wal is None or wal.segment is None:
        raise UsageError(f"{name!r} is not a WAL segment name (24 hex digits: timeline, log, seg)")
    per_log = segments_per_log(wal_segment_size)
    log, seg = int(wal.segment[8:16], 16), int(wal.segment[16:24], 16)
    if seg >= per_log:
        raise UsageError(
            f"{name!r} cannot exist with wal_segment_size {wal_segment_size} (seg part >= {per_log:X}); "
            "the server uses smaller segments: pass its `SHOW wal_segment_size`"
        )
    segno = log * per_log + seg
    return Segment(_check_timeline(wal.timeline), segno, segno * wal_segment_size)


def classify(name: str) -> WalFile | None:
    """Recognise a WAL archive file name (segment, .partial, .backup, .history, optionally compressed); else None."""
    m = _WAL_RE.match(name)
    if not m:
        return None
    suffix = m.group("suffix") or ""
    if m.group("history"):
        return WalFile(name, "history", int(m.group("history"), 16), None, suffix)
    segment = m.group("segment")
    kind: WalKind = "partial" if m.group("partial") else "backup" if m.group("offset") else "segment"
    return WalFile(name, kind, int(segment[:8], 16), segment, suffix)


def segments_between(
    timeline: int, start_lsn: int, end_lsn: int, *, wal_segment_size: int = DEFAULT_WAL_SEGMENT_SIZE
) -> list[str]:
    """Names of the segments holding start_lsn through end_lsn (both included) on one timeline."""
    if end_lsn < start_lsn:
        raise UsageError(f"end LSN {format_lsn(end_lsn)} is before start LSN {format_lsn(start_lsn)}; swap them")
    first = segment_number(start_lsn, wal_segment_size=wal_segment_size)
    last = segment_number(end_lsn, wal_segment_size=wal_segment_size)
    return [segment_name_from_number(timeline, n, wal_segment_size=wal_segment_size) for n in range(first, last + 1)]


def find_gaps(names: Iterable[str], *, wal_segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> dict[int, list[WalGap]]:
    """Missing segments between the first and last complete segment present, per timeline (only gaps listed)."""
    present: dict[int, set[int]] = {}
    for name in names:
        wal = classify(name)
        if wal is not None and wal.kind == "segment":
            seg = parse_segment_name(name, wal_segment_size=wal_segment_size)
            present.setdefault(seg.timeline, set()).add(seg.segno)
    gaps: dict[int, list[WalGap]] = {}
    for timeline, segnos in sorted(present.items()):
        ordered = sorted(segnos)
        for before, after in zip(ordered, ordered[1:], strict=False):
            if after - before > 1:
                first = segment_name_from_number(timeline, before + 1, wal_segment_size=wal_segment_size)
                last = segment_name_from_number(timeline, after - 1, wal_segment_size=wal_segment_size)
                gaps.setdefault(timeline, []).append(WalGap(timeline, first, last, after - before - 1))
    return gaps
