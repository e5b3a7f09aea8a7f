"""Unit tests of LSN parsing/formatting and WAL segment naming, classification and gap finding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backup_tools.errors import UsageError
from backup_tools.wal.lsn import (
    DEFAULT_WAL_SEGMENT_SIZE,
    MAX_LSN,
    Segment,
    WalGap,
    check_segment_size,
    classify,
    find_gaps,
    format_lsn,
    parse_lsn,
    parse_segment_name,
    segment_name,
    segment_name_from_number,
    segment_number,
    segments_between,
    segments_per_log,
)

MiB = 1024 * 1024
SIZES = [MiB * 2**k for k in range(11)]  # 1 MiB .. 1 GiB


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/1", 1),
        ("16/B374D848", (0x16 << 32) | 0xB374D848),
        ("16/b374d848", (0x16 << 32) | 0xB374D848),
        ("FFFFFFFF/FFFFFFFF", MAX_LSN),
        (" 1/0 ", 1 << 32),
    ],
)
def test_parse_lsn(text: str, value: int) -> None:
    assert parse_lsn(text) == value


@pytest.mark.parametrize("text", ["", "16", "16/", "/1", "G/0", "1/2/3", "123456789/0", "0x1/0", "-1/0", "1 /0"])
def test_parse_lsn_rejects_garbage(text: str) -> None:
    with pytest.raises(UsageError, match="invalid LSN"):
        parse_lsn(text)


def test_format_lsn_matches_postgresql_spelling() -> None:
    assert format_lsn((0x16 << 32) | 0xB374D848) == "16/B374D848"
    assert format_lsn(0) == "0/0"
    assert format_lsn(0x3000028) == "0/3000028"
    with pytest.raises(UsageError):
        format_lsn(-1)
    with pytest.raises(UsageError):
        format_lsn(MAX_LSN + 1)


@given(st.integers(min_value=0, max_value=MAX_LSN))
def test_lsn_round_trip(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


def test_segment_name_default_size() -> None:
    # pg_walfile_name_offset('16/B374D848') on timeline 1 -> 0000000100000016000000B3
    assert segment_name(1, parse_lsn("16/B374D848")) == "0000000100000016000000B3"
    assert segment_name(2, parse_lsn("0/3000028")) == "000000020000000000000003"


@pytest.mark.parametrize(
    ("lsn", "name"),
    [
        ("0/FFFFFF", "000000010000000000000000"),  # last byte of segment 0
        ("0/1000000", "000000010000000000000001"),  # first byte of segment 1
        ("0/FEFFFFFF", "0000000100000000000000FE"),
        ("0/FF000000", "0000000100000000000000FF"),  # last segment of log 0
        ("0/FFFFFFFF", "0000000100000000000000FF"),
        ("1/0", "000000010000000100000000"),  # log rolls over: no segment 100 with 16 MiB
    ],
)
def test_segment_boundaries(lsn: str, name: str) -> None:
    assert segment_name(1, parse_lsn(lsn)) == name


@pytest.mark.parametrize(
    ("size", "lsn", "name"),
    [
        (MiB, "0/FFFFF", "000000010000000000000000"),
        (MiB, "0/100000", "000000010000000000000001"),
        (MiB, "0/FFF00000", "000000010000000000000FFF"),
        (MiB, "1/0", "000000010000000100000000"),
        (64 * MiB, "0/3FFFFFF", "000000010000000000000000"),
        (64 * MiB, "0/4000000", "000000010000000000000001"),
        (64 * MiB, "16/B374D848", "00000001000000160000002C"),
        (1024 * MiB, "0/C0000000", "000000010000000000000003"),
        (1024 * MiB, "5/40000000", "000000010000000500000001"),
    ],
)
def test_segment_name_non_default_sizes(size: int, lsn: str, name: str) -> None:
    assert segment_name(1, parse_lsn(lsn), wal_segment_size=size) == name
    seg = parse_segment_name(name, wal_segment_size=size)
    assert seg.timeline == 1
    assert seg.start_lsn <= parse_lsn(lsn) < seg.start_lsn + size


@pytest.mark.parametrize("size", [0, MiB // 2, 3 * MiB, 2048 * MiB, 16 * MiB + 1])
def test_invalid_segment_sizes_are_refused(size: int) -> None:
    with pytest.raises(UsageError, match="power of two"):
        check_segment_size(size)
    with pytest.raises(UsageError):
        segment_name(1, 0, wal_segment_size=size)


def test_segments_per_log() -> None:
    assert segments_per_log() == 256
    assert segments_per_log(MiB) == 4096
    assert segments_per_log(1024 * MiB) == 4


@given(
    timeline=st.integers(min_value=1, max_value=0xFFFFFFFF),
    lsn=st.integers(min_value=0, max_value=MAX_LSN),
    size=st.sampled_from(SIZES),
)
def test_segment_name_round_trip(timeline: int, lsn: int, size: int) -> None:
    name = segment_name(timeline, lsn, wal_segment_size=size)
    assert len(name) == 24
    seg = parse_segment_name(name, wal_segment_size=size)
    assert seg == Segment(timeline, lsn // size, lsn - lsn % size)
    assert segment_name_from_number(timeline, seg.segno, wal_segment_size=size) == name


def test_parse_segment_name_detects_a_wrong_segment_size() -> None:
    # seg part 0x100 only exists with segments smaller than 16 MiB
    with pytest.raises(UsageError, match="smaller segments"):
        parse_segment_name("000000010000000000000100")
    assert parse_segment_name("000000010000000000000100", wal_segment_size=MiB).segno == 0x100


def test_parse_segment_name_rejects_other_names() -> None:
    for bad in ["00000001.history", "0000000100000000000000", "zzzzzzzz0000000000000001", "000000000000000000000001"]:
        with pytest.raises(UsageError):
            parse_segment_name(bad)


def test_timeline_zero_is_refused() -> None:
    with pytest.raises(UsageError, match="timeline"):
        segment_name(0, 0)


@pytest.mark.parametrize(
    ("name", "kind", "timeline", "segment", "suffix"),
    [
        ("000000010000000000000003", "segment", 1, "000000010000000000000003", ""),
        ("0000000A0000000000000003.partial", "partial", 10, "0000000A0000000000000003", ""),
        ("000000010000000000000002.00000028.backup", "backup", 1, "000000010000000000000002", ""),
        ("00000002.history", "history", 2, None, ""),
        ("000000010000000000000003.zst", "segment", 1, "000000010000000000000003", ".zst"),
        ("000000010000000000000003.partial.gz.enc", "partial", 1, "000000010000000000000003", ".gz.enc"),
        ("00000003.history.zst", "history", 3, None, ".zst"),
    ],
)
def test_classify(name: str, kind: str, timeline: int, segment: str | None, suffix: str) -> None:
    wal = classify(name)
    assert wal is not None
    assert (wal.kind, wal.timeline, wal.segment, wal.suffix) == (kind, timeline, segment, suffix)


@pytest.mark.parametrize(
    "name",
    [
        "00000001000000000000003",  # 23 digits
        "0000000100000000000000030",  # 25 digits
        "000000010000000000000003.tmp",
        "000000010000000000000003.backup",  # .backup needs the offset
        "0000000100000000000000ab",  # PostgreSQL writes upper case
        "00000001.History",
        "archive_status",
        ".000000010000000000000003.tmp-1234",
        "000000010000000000000003.partial.partial",
    ],
)
def test_classify_rejects_non_wal_names(name: str) -> None:
    assert classify(name) is None


def test_segments_between_inclusive_and_across_log_boundary() -> None:
    names = segments_between(1, parse_lsn("0/FE000010"), parse_lsn("1/1000000"))
    assert names == [
        "0000000100000000000000FE",
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]
    assert segments_between(3, parse_lsn("0/3000028"), parse_lsn("0/3000100")) == ["000000030000000000000003"]
    assert len(segments_between(1, 0, parse_lsn("1/0"), wal_segment_size=MiB)) == 4097
    with pytest.raises(UsageError, match="before start"):
        segments_between(1, 10, 9)


def test_find_gaps_none_when_continuous_across_log_boundary() -> None:
    names = segments_between(1, parse_lsn("0/FD000000"), parse_lsn("1/2000000"))
    assert find_gaps(names) == {}
    # With 1 MiB segments the same names are far apart: the log rolls over after 0xFFF, not 0xFF.
    gaps = find_gaps(["0000000100000000000000FF", "000000010000000100000000"], wal_segment_size=MiB)
    assert gaps == {1: [WalGap(1, "000000010000000000000100", "000000010000000000000FFF", 0xF00)]}


def test_find_gaps_reports_ranges_per_timeline() -> None:
    tli1 = [segment_name_from_number(1, n) for n in (1, 2, 3, 5, 9, 10)]
    tli2 = [segment_name_from_number(2, n) for n in (10, 11, 13)]
    other = [
        "00000002.history",
        "000000010000000000000004.partial",  # a .partial does not fill a gap
        "000000010000000000000002.00000028.backup",
        "README",
    ]
    gaps = find_gaps(tli1 + tli2 + other)
    assert gaps == {
        1: [
            WalGap(1, "000000010000000000000004", "000000010000000000000004", 1),
            WalGap(1, "000000010000000000000006", "000000010000000000000008", 3),
        ],
        2: [WalGap(2, "00000002000000000000000C", "00000002000000000000000C", 1)],
    }


def test_find_gaps_counts_compressed_segments_as_present() -> None:
    names = ["000000010000000000000001.zst", "000000010000000000000002.zst", "000000010000000000000004"]
    assert find_gaps(names) == {1: [WalGap(1, "000000010000000000000003", "000000010000000000000003", 1)]}


@given(
    present=st.sets(st.integers(min_value=0, max_value=600), min_size=1, max_size=60),
    size=st.sampled_from([MiB, DEFAULT_WAL_SEGMENT_SIZE, 1024 * MiB]),
)
def test_find_gaps_property(present: set[int], size: int) -> None:
    names = [segment_name_from_number(7, n, wal_segment_size=size) for n in present]
    gaps = find_gaps(names, wal_segment_size=size)
    missing = set(range(min(present), max(present) + 1)) - present
    covered: set[int] = set()
    for gap in gaps.get(7, []):
        first = parse_segment_name(gap.first, wal_segment_size=size).segno
        last = parse_segment_name(gap.last, wal_segment_size=size).segno
        assert gap.count == last - first + 1
        covered |= set(range(first, last + 1))
    assert covered == missing
    assert set(gaps) <= {7}


def test_segment_number_matches_division() -> None:
    assert segment_number(parse_lsn("0/2FFFFFF")) == 2
    assert segment_number(parse_lsn("0/3000000")) == 3
    assert segment_number(parse_lsn("0/3000000"), wal_segment_size=32 * MiB) == 1
