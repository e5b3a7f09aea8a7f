"""Retention planning and pruning: GFS buckets from catalog times, failure safety, time zones, WAL, resumable prune."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from backup_tools.catalog import BackupRecord
from backup_tools.errors import RepositoryError, UsageError
from backup_tools.lifecycle.prune import prune
from backup_tools.lifecycle.retention import (
    DELETING,
    RetentionPlan,
    RetentionPolicy,
    bucket_labels,
    plan_retention,
)
from backup_tools.repo.base import FileRepository
from backup_tools.wal.lsn import format_lsn, parse_segment_name, segment_name_from_number

MiB = 1024 * 1024


def rec(
    backup_id: str,
    when: datetime,
    *,
    kind: str = "full",
    status: str = "DONE",
    parent: str | None = None,
    verified: bool = False,
    lsn: int | None = None,
    timeline: int = 1,
    **options: object,
) -> BackupRecord:
    """A catalog record whose catalog time (stop_time, or start_time while STARTED) is `when`."""
    finished = status != "STARTED"
    return BackupRecord(
        id=backup_id,
        kind=kind,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        start_time=when - timedelta(minutes=20) if finished else when,
        stop_time=when if finished else None,
        parent=parent,
        start_lsn=format_lsn(lsn) if lsn is not None else None,
        timeline=timeline,
        verified_at=when + timedelta(hours=1) if verified else None,
        options=dict(options),
    )


def daily(first: datetime, days: int, *, prefix: str = "d", **kw: object) -> list[BackupRecord]:
    """One backup per day at first's time of day."""
    return [rec(f"{prefix}{i:03d}", first + timedelta(days=i), **kw) for i in range(days)]  # type: ignore[arg-type]


def kept_ids(plan: RetentionPlan) -> set[str]:
    return {r.id for r in plan.keep}


def deleted_ids(plan: RetentionPlan) -> set[str]:
    return {r.id for r in plan.delete}


# --- policy -----------------------------------------------------------------------------------------------------


def test_policy_defaults_follow_the_strategies() -> None:
    assert RetentionPolicy() == RetentionPolicy(daily=30, weekly=12, monthly=12, yearly=7)
    assert RetentionPolicy.from_config(None) == RetentionPolicy()
    assert RetentionPolicy.from_config({"daily": 7, "yearly": 0}) == RetentionPolicy(7, 12, 12, 0)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"daily": -1}, "retention daily = -1 is invalid"),
        ({"weekly": "12"}, "retention weekly = '12' is invalid"),
        ({"monthly": 1.5}, "retention monthly = 1.5 is invalid"),
        ({"yearly": True}, "retention yearly = True is invalid"),
        ({"daly": 30}, "unknown retention setting.*daly"),
        ({"daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}, "keeps no buckets"),
        ([("daily", 3)], "must be a table"),
    ],
)
def test_policy_from_config_rejects_bad_values(config: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        RetentionPolicy.from_config(config)  # type: ignore[arg-type]


# --- buckets ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "tz", "labels"),
    [
        (datetime(2026, 11, 20, 3, tzinfo=UTC), "UTC", ("2026-11-20", "2026-W47", "2026-11", "2026")),
        # 2027-01-01 belongs to ISO week 53 of 2026; 2024-12-30 to week 1 of 2025
        (datetime(2027, 1, 1, 12, tzinfo=UTC), "UTC", ("2027-01-01", "2026-W53", "2027-01", "2027")),
        (datetime(2024, 12, 30, 12, tzinfo=UTC), "UTC", ("2024-12-30", "2025-W01", "2024-12", "2024")),
        # 29 February, and its last half hour already being 1 March in Berlin
        (datetime(2028, 2, 29, 12, tzinfo=UTC), "UTC", ("2028-02-29", "2028-W09", "2028-02", "2028")),
        (datetime(2028, 2, 29, 23, 30, tzinfo=UTC), "Europe/Berlin", ("2028-03-01", "2028-W09", "2028-03", "2028")),
        # New Year's Eve in UTC is already next year in Berlin, still old year in New York
        (datetime(2025, 12, 31, 23, 30, tzinfo=UTC), "Europe/Berlin", ("2026-01-01", "2026-W01", "2026-01", "2026")),
        (datetime(2026, 1, 1, 3, tzinfo=UTC), "America/New_York", ("2025-12-31", "2026-W01", "2025-12", "2025")),
        # DST: the night of the change in both zones
        (datetime(2026, 3, 29, 22, 30, tzinfo=UTC), "Europe/Berlin", ("2026-03-30", "2026-W14", "2026-03", "2026")),
        (datetime(2026, 3, 8, 4, 30, tzinfo=UTC), "America/New_York", ("2026-03-07", "2026-W10", "2026-03", "2026")),
        (datetime(2026, 3, 9, 4, 30, tzinfo=UTC), "America/New_York", ("2026-03-09", "2026-W11", "2026-03", "2026")),
    ],
)
def test_bucket_labels(when: datetime, tz: str, labels: tuple[str, str, str, str]) -> None:
    got = bucket_labels(when, tz)
    assert (got["daily"], got["weekly"], got["monthly"], got["yearly"]) == labels


def test_unknown_time_zone_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown time zone 'Mars/Olympus'"):
        plan_retention([], RetentionPolicy(), now=datetime(2026, 1, 1, tzinfo=UTC), tz="Mars/Olympus")


def test_naive_now_and_duplicate_ids_are_refused() -> None:
    with pytest.raises(UsageError, match="timezone-aware"):
        plan_retention([], RetentionPolicy(), now=datetime(2026, 1, 1))
    t = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="duplicate backup ids"):
        plan_retention([rec("a", t), rec("a", t + timedelta(days=1))], RetentionPolicy(), now=t)


# --- GFS --------------------------------------------------------------------------------------------------------


def test_gfs_keeps_newest_per_bucket_for_the_newest_buckets() -> None:
    records = daily(datetime(2026, 1, 1, 2, tzinfo=UTC), 90)  # 1 January .. 31 March 2026
    plan = plan_retention(records, RetentionPolicy(3, 2, 2, 1), now=datetime(2026, 4, 1, tzinfo=UTC))
    by_date = {r.id: (r.stop_time or r.start_time).date().isoformat() for r in records}
    kept = {by_date[d.record.id]: d.reason for d in plan.decisions if d.keep}
    assert kept == {
        "2026-03-31": "daily 2026-03-31; weekly 2026-W14; monthly 2026-03; yearly 2026; newest good backup",
        "2026-03-30": "daily 2026-03-30",
        "2026-03-29": "daily 2026-03-29; weekly 2026-W13",
        "2026-02-28": "monthly 2026-02",
    }
    assert len(plan.delete) == 86
    assert {d.reason for d in plan.decisions if not d.keep} == {
        "outside retention: not the newest good backup of a kept bucket"
    }


def test_newest_backup_of_a_day_wins_and_older_ones_go() -> None:
    t = datetime(2026, 5, 10, 1, tzinfo=UTC)
    records = [rec("early", t), rec("late", t + timedelta(hours=20)), rec("yesterday", t - timedelta(hours=2))]
    plan = plan_retention(records, RetentionPolicy(daily=2, weekly=0, monthly=0, yearly=0), now=t + timedelta(days=1))
    assert kept_ids(plan) == {"late", "yesterday"}
    assert plan.decision("yesterday").reason == "daily 2026-05-09"
    assert plan.decision("early").keep is False


def test_yearly_keeps_seven_years() -> None:
    records = [rec(f"y{y}", datetime(y, 12, 31, 2, tzinfo=UTC)) for y in range(2015, 2027)]
    plan = plan_retention(records, RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=7), now=datetime.now(UTC))
    assert kept_ids(plan) == {f"y{y}" for y in range(2020, 2027)}


# --- the `find -mtime +30 -delete` trap, clock skew, failures -------------------------------------------------------


def test_month_of_failures_deletes_nothing() -> None:
    start = datetime(2026, 1, 1, 2, tzinfo=UTC)
    good = daily(start, 20, prefix="good")
    failed = daily(start + timedelta(days=20), 31, prefix="fail", status="FAILED")
    now = start + timedelta(days=51, hours=1)
    plan = plan_retention(good + failed, RetentionPolicy(daily=7, weekly=0, monthly=0, yearly=1), now=now)
    assert plan.delete == ()
    assert plan.decision("good000").reason.startswith("newest backups failed: nothing deleted (else: outside retention")
    assert plan.decision("good019").reason == "daily 2026-01-20; yearly 2026; newest good backup"


def test_days_of_stale_started_backups_delete_nothing() -> None:
    start = datetime(2026, 1, 1, 2, tzinfo=UTC)
    records = daily(start, 10, prefix="good") + daily(start + timedelta(days=10), 31, prefix="hung", status="STARTED")
    plan = plan_retention(records, RetentionPolicy(daily=3), now=start + timedelta(days=45))
    assert plan.delete == ()
    assert "unfinished (STARTED) newer than newest good backup good009 kept" in plan.decision("hung030").reasons


def test_after_a_month_of_failures_the_good_backups_before_stay_in_the_window() -> None:
    # find -mtime +30 -delete would remove all 20 good dumps here; GFS counts buckets that hold a good backup.
    start = datetime(2026, 1, 1, 2, tzinfo=UTC)
    good = daily(start, 20, prefix="good")
    failed = daily(start + timedelta(days=20), 31, prefix="fail", status="FAILED")
    today = rec("today", start + timedelta(days=51))
    plan = plan_retention(good + failed + [today], RetentionPolicy(), now=start + timedelta(days=51, hours=1))
    assert {r.id for r in good} | {"today"} <= kept_ids(plan)
    assert deleted_ids(plan) == {r.id for r in failed}
    assert {plan.decision(r.id).reason for r in failed} == {"failed backup"}


def test_clock_forty_days_ahead_changes_nothing() -> None:
    records = daily(datetime(2026, 1, 1, 2, tzinfo=UTC), 60)
    last = records[-1].stop_time
    assert last is not None
    right = plan_retention(records, RetentionPolicy(daily=30, weekly=0, monthly=0, yearly=0), now=last)
    ahead = plan_retention(
        records, RetentionPolicy(daily=30, weekly=0, monthly=0, yearly=0), now=last + timedelta(days=40)
    )
    assert right.decisions == ahead.decisions
    assert kept_ids(ahead) == {r.id for r in records[-30:]}


def test_failed_between_good_backups_is_deleted_and_newer_failures_are_kept() -> None:
    t = datetime(2026, 6, 1, 2, tzinfo=UTC)
    records = [
        rec("good1", t),
        rec("bad", t + timedelta(hours=3), status="FAILED"),
        rec("good2", t + timedelta(days=1)),
        rec("running", t + timedelta(days=1, hours=6), status="STARTED"),
    ]
    plan = plan_retention(records, RetentionPolicy(daily=5), now=t + timedelta(days=1, hours=7))
    assert plan.decision("bad").keep is False
    assert plan.decision("bad").reason == "failed backup"
    assert plan.decision("running").keep
    assert plan.decision("running").reason == "unfinished (STARTED) newer than newest good backup good2 kept"
    assert kept_ids(plan) == {"good1", "good2", "running"}


def test_started_backups_older_than_newest_good() -> None:
    t = datetime(2026, 6, 1, 2, tzinfo=UTC)
    records = [
        rec("abandoned", t - timedelta(days=5), status="STARTED"),
        rec("long-running", t - timedelta(hours=2), status="STARTED"),
        rec("good", t),
    ]
    plan = plan_retention(records, RetentionPolicy(daily=5), now=t + timedelta(hours=1))
    assert plan.decision("abandoned").reason == "abandoned unfinished backup (STARTED before newest good backup good)"
    assert plan.decision("long-running").keep
    assert "may still be running" in plan.decision("long-running").reason


def test_no_good_backup_means_nothing_is_deleted() -> None:
    t = datetime(2026, 6, 1, 2, tzinfo=UTC)
    records = daily(t, 40, status="FAILED") + [rec("old-started", t - timedelta(days=3), status="STARTED")]
    plan = plan_retention(records, RetentionPolicy(daily=1), now=t + timedelta(days=100))
    assert plan.delete == ()
    assert plan.decision("d000").reason == "failed, newer than any good backup: kept for diagnosis"


# --- protection: newest verified, chains, series ------------------------------------------------------------------


def test_newest_verified_backup_is_kept_even_outside_the_policy() -> None:
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    records = daily(t, 10)
    records[2] = rec("old-verified", t + timedelta(days=2), verified=True)
    records[1] = rec("older-verified", t + timedelta(days=1), verified=True)
    plan = plan_retention(records, RetentionPolicy(daily=3, weekly=0, monthly=0, yearly=0), now=t + timedelta(days=10))
    assert plan.decision("old-verified").keep
    assert plan.decision("old-verified").reason == "newest verified backup"
    assert plan.decision("older-verified").keep is False
    assert kept_ids(plan) == {"old-verified", "d007", "d008", "d009"}


def test_incremental_chain_keeps_all_ancestors() -> None:
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    records = [
        rec("full-old", t - timedelta(days=9)),
        rec("full", t),
        rec("inc1", t + timedelta(days=1), kind="incremental", parent="full"),
        rec("inc2", t + timedelta(days=2), kind="incremental", parent="inc1"),
        rec("inc2b", t + timedelta(days=2, hours=1), kind="incremental", parent="inc1"),
        rec("inc3", t + timedelta(days=3), kind="incremental", parent="inc2"),
    ]
    plan = plan_retention(records, RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0), now=t + timedelta(days=4))
    assert kept_ids(plan) == {"inc3", "inc2", "inc1", "full"}
    assert plan.decision("inc2").reason == "parent of incremental inc3"
    assert plan.decision("full").reason == "parent of incremental inc1"
    assert deleted_ids(plan) == {"full-old", "inc2b"}


def test_incremental_with_missing_parent_is_warned_about() -> None:
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    plan = plan_retention([rec("inc", t, kind="incremental", parent="gone")], RetentionPolicy(), now=t)
    assert plan.warnings == ("inc needs parent gone, which is missing from the catalog: inc cannot be restored",)


def test_logical_and_physical_backups_are_retained_separately() -> None:
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    physical = daily(t, 10, prefix="full")
    logical = daily(t + timedelta(hours=1), 10, prefix="dump", kind="logical")  # always the newest of the day
    plan = plan_retention(physical + logical, RetentionPolicy(daily=2, weekly=0, monthly=0, yearly=0), now=t)
    assert kept_ids(plan) == {"full008", "full009", "dump008", "dump009"}


def test_half_deleted_backup_is_finished_even_when_frozen() -> None:
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    records = [
        rec("half", t - timedelta(days=1), **{DELETING: True}),
        rec("good", t),
        rec("bad", t + timedelta(hours=1), status="FAILED"),
    ]
    plan = plan_retention(records, RetentionPolicy(), now=t)
    assert deleted_ids(plan) == {"half"}
    assert plan.decision("half").reason == "half-deleted by an earlier prune: finishing"
    assert plan.decision("bad").keep


def test_kept_incremental_whose_parent_is_half_deleted_is_warned_about() -> None:
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    records = [rec("full", t, **{DELETING: True}), rec("inc", t + timedelta(days=1), kind="incremental", parent="full")]
    plan = plan_retention(records, RetentionPolicy(), now=t + timedelta(days=1))
    assert deleted_ids(plan) == {"full"}
    assert "inc needs parent full, which is half-deleted by an earlier prune: inc cannot be restored" in plan.warnings


# --- month ends, 29 February, DST ----------------------------------------------------------------------------------


def test_month_end_buckets_depend_on_the_time_zone() -> None:
    records = [
        rec("jan31", datetime(2026, 1, 31, 23, 30, tzinfo=UTC)),
        rec("feb1", datetime(2026, 2, 1, 0, 30, tzinfo=UTC)),
    ]
    policy = RetentionPolicy(daily=0, weekly=0, monthly=2, yearly=0)
    now = datetime(2026, 2, 2, tzinfo=UTC)
    utc = plan_retention(records, policy, now=now)
    assert utc.decision("jan31").reason == "monthly 2026-01"
    assert utc.decision("feb1").reason == "monthly 2026-02; newest good backup"
    new_york = plan_retention(records, policy, now=now, tz="America/New_York")  # both are 31 January evening there
    assert deleted_ids(new_york) == {"jan31"}
    assert new_york.decision("feb1").reason == "monthly 2026-01; newest good backup"


def test_29_february() -> None:
    records = daily(datetime(2028, 2, 26, 12, tzinfo=UTC), 6)  # 26 Feb .. 2 Mar 2028
    plan = plan_retention(
        records, RetentionPolicy(daily=1, weekly=0, monthly=2, yearly=0), now=datetime(2028, 3, 3, tzinfo=UTC)
    )
    assert kept_ids(plan) == {"d003", "d005"}
    assert plan.decision("d003").reason == "monthly 2028-02"
    assert (records[3].stop_time or records[3].start_time).date().isoformat() == "2028-02-29"


@pytest.mark.parametrize(
    ("tz", "older", "newer", "shared_day"),
    [
        # autumn: two nights of backups at the same UTC time fall on one local calendar day
        (
            "Europe/Berlin",
            datetime(2026, 10, 24, 22, 30, tzinfo=UTC),
            datetime(2026, 10, 25, 22, 30, tzinfo=UTC),
            "2026-10-25",
        ),
        (
            "America/New_York",
            datetime(2026, 11, 1, 4, 30, tzinfo=UTC),
            datetime(2026, 11, 2, 4, 30, tzinfo=UTC),
            "2026-11-01",
        ),
    ],
)
def test_dst_fall_back_merges_two_utc_days(tz: str, older: datetime, newer: datetime, shared_day: str) -> None:
    before = rec("before", older - timedelta(days=1))
    records = [before, rec("older", older), rec("newer", newer)]
    policy = RetentionPolicy(daily=2, weekly=0, monthly=0, yearly=0)
    local = plan_retention(records, policy, now=newer + timedelta(hours=1), tz=tz)
    assert local.decision("newer").reason == f"daily {shared_day}; newest good backup"
    assert deleted_ids(local) == {"older"}
    assert local.decision("before").keep
    utc = plan_retention(records, policy, now=newer + timedelta(hours=1), tz="UTC")
    assert deleted_ids(utc) == {"before"}


@pytest.mark.parametrize(
    ("tz", "first", "skipped_day"),
    [
        ("Europe/Berlin", datetime(2026, 3, 26, 22, 30, tzinfo=UTC), "2026-03-29"),
        ("America/New_York", datetime(2026, 3, 5, 4, 30, tzinfo=UTC), "2026-03-08"),
    ],
)
def test_dst_spring_forward_skips_a_local_day_without_losing_backups(
    tz: str, first: datetime, skipped_day: str
) -> None:
    records = daily(first, 6)
    plan = plan_retention(
        records, RetentionPolicy(daily=6, weekly=0, monthly=0, yearly=0), now=first + timedelta(days=7), tz=tz
    )
    assert plan.delete == ()
    days = {reason.split()[1] for d in plan.decisions for reason in d.reasons if reason.startswith("daily ")}
    assert len(days) == 6
    assert skipped_day not in days


# --- WAL ------------------------------------------------------------------------------------------------------------


def wal_names(timeline: int, segnos: range, *, size: int = 16 * MiB) -> list[str]:
    return [f"wal/{segment_name_from_number(timeline, n, wal_segment_size=size)}" for n in segnos]


def test_wal_before_the_oldest_kept_physical_backup_is_deleted() -> None:
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    records = [
        rec("old", t, lsn=0x2000028),
        rec("kept", t + timedelta(days=1), lsn=0x5000028),
        rec("dump", t + timedelta(days=1, hours=1), kind="logical"),
        rec("tli2", t + timedelta(days=2), lsn=0x9000028, timeline=2),
    ]
    wal = (
        wal_names(1, range(0, 8))
        + wal_names(2, range(7, 12))
        + [
            "wal/00000002.history",
            "wal/000000010000000000000003.00000028.backup",
            "wal/000000010000000000000007.partial",
            "wal/000000010000000000000005.00000028.backup",
            "wal/not-a-wal-file",
        ]
    )
    plan = plan_retention(
        records,
        RetentionPolicy(daily=2, weekly=0, monthly=0, yearly=0),
        now=t + timedelta(days=3),
        wal=wal,
        wal_segment_size=16 * MiB,
    )
    assert deleted_ids(plan) == {"old"}
    assert plan.wal_delete == (
        "wal/000000010000000000000000",
        "wal/000000010000000000000001",
        "wal/000000010000000000000002",
        "wal/000000010000000000000003",
        "wal/000000010000000000000003.00000028.backup",
        "wal/000000010000000000000004",
    )
    assert "kept from the oldest kept physical backup kept at 0/5000028 on timeline 1" in plan.wal_note


def test_wal_is_left_alone_when_frozen_or_without_physical_backups() -> None:
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    wal = wal_names(1, range(0, 8))
    frozen = [
        rec("a", t, lsn=0x3000028),
        rec("b", t + timedelta(days=9), lsn=0x6000028),
        rec("c", t + timedelta(days=10), status="FAILED"),
    ]
    plan = plan_retention(frozen, RetentionPolicy(daily=1), now=t + timedelta(days=10), wal=wal)
    assert plan.wal_delete == () and plan.delete == ()
    dumps = [rec("dump", t, kind="logical")]
    assert plan_retention(dumps, RetentionPolicy(), now=t, wal=wal).wal_delete == ()
    no_lsn = [rec("full", t)]
    plan = plan_retention(no_lsn, RetentionPolicy(), now=t, wal=wal)
    assert plan.wal_delete == ()
    assert plan.warnings == ("a kept physical backup has no start_lsn in its catalog; WAL left alone",)


def test_wal_segment_size_mismatch_deletes_nothing() -> None:
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    wal = ["wal/000000010000000000000100"]  # only exists with segments smaller than 16 MiB
    plan = plan_retention([rec("a", t, lsn=0x30000000)], RetentionPolicy(), now=t, wal=wal, wal_segment_size=16 * MiB)
    assert plan.wal_delete == ()
    assert "smaller segments" in plan.warnings[0]


def test_wal_segment_size_from_the_catalog() -> None:
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    records = [rec("a", t, lsn=0x1_0000_0000 + 3 * 64 * MiB + 40, wal_segment_size=64 * MiB)]
    wal = wal_names(1, range(60, 70), size=64 * MiB)  # log 0 seg 3C..3F, log 1 seg 0..5
    plan = plan_retention(records, RetentionPolicy(), now=t, wal=wal)
    assert plan.wal_delete == tuple(wal_names(1, range(60, 67), size=64 * MiB))


def test_inferred_segment_size_errs_on_keeping_wal() -> None:
    # 64 MiB segments, only a few archived: names alone cannot tell 64 MiB from 1 GiB, so far less is deleted.
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    start = 10 * 64 * MiB + 40  # inside segment 10 (0000000A)
    wal = wal_names(1, range(0, 12), size=64 * MiB)
    plan = plan_retention([rec("a", t, lsn=start)], RetentionPolicy(), now=t, wal=wal)
    deleted = {int(name[-8:], 16) for name in plan.wal_delete}
    assert 10 not in deleted
    assert all((n + 1) * 64 * MiB <= start for n in deleted)
    assert "segments of at most" in plan.wal_note


# --- render ---------------------------------------------------------------------------------------------------------


def test_render_lists_every_backup_with_action_and_reason() -> None:
    t = datetime(2026, 11, 20, 2, tzinfo=UTC)
    records = [rec("b-old", t - timedelta(days=1), lsn=0x1000028), rec("b-new", t, lsn=0x3000028)]
    plan = plan_retention(
        records,
        RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0),
        now=t,
        tz="Europe/Berlin",
        wal=wal_names(1, range(0, 4)),
        wal_segment_size=16 * MiB,
    )
    text = plan.render()
    lines = text.splitlines()
    assert lines[0].startswith("retention plan at 2026-11-20T02:00:00+00:00 (daily 1, weekly 0, monthly 0, yearly 0")
    assert lines[1].split() == ["action", "id", "time", "(Europe/Berlin)", "kind", "status", "reason"]
    assert lines[2].split()[:6] == ["keep", "b-new", "2026-11-20", "03:00", "CET", "full"]
    assert lines[2].endswith("daily 2026-11-20; newest good backup")
    assert lines[3].split()[:2] == ["DELETE", "b-old"]
    assert "backups: keep 1, delete 1" in text
    assert "WAL: delete 3 file(s); kept from the oldest kept physical backup b-new at 0/3000028 on timeline 1" in text


# --- prune on a real FileRepository ---------------------------------------------------------------------------------


def store(repo: FileRepository, record: BackupRecord) -> None:
    """Write a backup's data objects and its catalog, as a backup run would."""
    repo.put_bytes(f"backups/{record.id}/base.tar.zst", f"data of {record.id}".encode())
    repo.put_bytes(f"backups/{record.id}/backup_manifest", b"{}")
    repo.write_catalog(record)


@pytest.fixture
def history() -> list[BackupRecord]:
    t = datetime(2026, 1, 1, 2, tzinfo=UTC)
    records = []
    for i in range(12):
        kind, parent = ("full", None) if i % 4 == 0 else ("incremental", records[-1].id)
        lsn = (i + 1) * 16 * MiB + 40
        records.append(
            rec(f"b{i:02d}", t + timedelta(days=i), kind=kind, parent=parent, lsn=lsn, wal_segment_size=16 * MiB)
        )
    records.append(rec("failed", t + timedelta(days=5, hours=1), status="FAILED"))
    return records


@pytest.fixture
def repo(tmp_path: Path, history: list[BackupRecord]) -> FileRepository:
    repository = FileRepository(tmp_path / "repo")
    for record in history:
        store(repository, record)
    for name in wal_names(1, range(0, 14)):
        repository.put_bytes(name, b"wal")
    return repository


POLICY = RetentionPolicy(daily=3, weekly=0, monthly=0, yearly=0)
NOW = datetime(2026, 1, 13, tzinfo=UTC)
EXPECTED_KEPT = {"b08", "b09", "b10", "b11"}  # daily b09..b11, and full b08 as parent of b09
EXPECTED_WAL_DELETED = {segment_name_from_number(1, n) for n in range(0, 9)}  # b08 starts in segment 9


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prune_dry_run_changes_nothing(repo: FileRepository) -> None:
    before = snapshot(repo.root)
    logged: list[str] = []
    result = prune(repo, POLICY, now=NOW, dry_run=True, log=logged.append)
    assert snapshot(repo.root) == before
    assert result.dry_run and result.deleted == ()
    assert kept_ids(result.plan) == EXPECTED_KEPT
    assert "dry run: nothing is deleted" in logged[0]
    assert "DELETE  b00" in logged[0]


def test_prune_deletes_backups_catalog_last_and_wal(repo: FileRepository) -> None:
    logged: list[str] = []
    result = prune(repo, POLICY, now=NOW, dry_run=False, log=logged.append)
    assert {r.id for r in repo.list_backups()} == EXPECTED_KEPT
    assert set(result.deleted) == {f"b{i:02d}" for i in range(8)} | {"failed"}
    assert {k.split("/")[1] for k in repo.list("backups/")} == EXPECTED_KEPT
    assert {k.removeprefix("wal/") for k in repo.list("wal/")} == {segment_name_from_number(1, n) for n in range(9, 14)}
    assert {k.removeprefix("wal/") for k in result.deleted_wal} == EXPECTED_WAL_DELETED
    assert not (repo.root / "locks" / "repo.lock").exists()
    assert any(line.startswith("### Deleting backup b07:") for line in logged)
    again = prune(repo, POLICY, now=NOW, dry_run=False, log=logged.append)
    assert again.deleted == () and again.deleted_wal == ()


def test_prune_refuses_while_the_repository_is_locked_but_dry_run_works(repo: FileRepository) -> None:
    with repo.lock():
        with pytest.raises(RepositoryError, match="is locked by pid"):
            prune(repo, POLICY, now=NOW, dry_run=False, log=lambda _: None)
        assert prune(repo, POLICY, now=NOW, dry_run=True, log=lambda _: None).plan.delete
    assert len(repo.list_backups()) == 13


class Killed(BaseException):
    """Stands for SIGKILL in the middle of a prune."""


class DyingRepository(FileRepository):
    """A FileRepository whose process 'dies' on the n-th delete."""

    def __init__(self, root: Path, *, die_at: int):
        super().__init__(root)
        self.deletes_left = die_at

    def delete(self, key: str) -> None:
        self.deletes_left -= 1
        if self.deletes_left < 0:
            raise Killed(key)
        super().delete(key)


def leave_stale_lock(repo: FileRepository) -> None:
    """Leave the lock file a SIGKILLed prune leaves: owned by a process that no longer exists."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    lock = repo.root / "locks" / "repo.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "since": 0}))


TOTAL_DELETES = 9 * 3 + len(EXPECTED_WAL_DELETED)  # 9 backups x (2 data objects + catalog), then WAL


@pytest.mark.parametrize("die_at", [0, 1, 2, 3, 7, 14, 26, 27, 30, TOTAL_DELETES - 1])
def test_prune_resumes_after_being_killed(repo: FileRepository, die_at: int) -> None:
    dying = DyingRepository(repo.root, die_at=die_at)
    with pytest.raises(Killed):
        prune(dying, POLICY, now=NOW, dry_run=False, log=lambda _: None)
    # Every backup chosen for deletion is durably marked before any object goes, so none looks restorable.
    survivors = {r.id: r for r in repo.list_backups()}
    assert set(survivors) >= EXPECTED_KEPT
    for backup_id, record in survivors.items():
        assert bool(record.options.get(DELETING)) == (backup_id not in EXPECTED_KEPT)
        assert record.is_good == (backup_id in EXPECTED_KEPT)  # half-deleted ones are FAILED for every reader
    for backup_id in EXPECTED_KEPT:
        assert repo.exists(f"backups/{backup_id}/base.tar.zst")
    leave_stale_lock(repo)
    later = NOW + timedelta(days=1, hours=5)  # a rerun the next day still finishes exactly the same deletions
    result = prune(repo, POLICY, now=later, dry_run=False, log=lambda _: None)
    assert set(result.resumed) == set(survivors) - EXPECTED_KEPT
    assert {r.id for r in repo.list_backups()} == EXPECTED_KEPT
    assert {k.split("/")[1] for k in repo.list("backups/")} == EXPECTED_KEPT
    assert {k.removeprefix("wal/") for k in repo.list("wal/")} == {segment_name_from_number(1, n) for n in range(9, 14)}
    assert all(result.plan.decision(i).reason == "half-deleted by an earlier prune: finishing" for i in result.resumed)


def test_total_deletes_matches_the_fixture(repo: FileRepository) -> None:
    counting = DyingRepository(repo.root, die_at=10**6)
    prune(counting, POLICY, now=NOW, dry_run=False, log=lambda _: None)
    assert 10**6 - counting.deletes_left == TOTAL_DELETES
    assert os.listdir(repo.root / "locks") == []


# --- properties over random histories -------------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Kiritimati",
    "America/St_Johns",
    "Pacific/Chatham",
]


@st.composite
def histories(draw: st.DrawFn) -> list[BackupRecord]:
    """Backups over up to several years: mixed kinds, incremental chains, failures, hung runs, verifications."""
    when = datetime(2018, 1, 1, tzinfo=UTC) + timedelta(minutes=draw(st.integers(0, 10**6)))
    records: list[BackupRecord] = []
    for i in range(draw(st.integers(0, 40))):
        when += timedelta(minutes=draw(st.one_of(st.integers(0, 60 * 30), st.integers(0, 60 * 24 * 400))))
        kind = draw(st.sampled_from(["logical", "full", "incremental", "incremental"]))
        status = draw(st.sampled_from(["DONE", "DONE", "DONE", "FAILED", "STARTED"]))
        parent = None
        if kind == "incremental":
            physical = [r.id for r in records if r.kind != "logical"]
            parent = draw(st.sampled_from(physical[-5:] + ["missing-parent"]))
        lsn = 16 * MiB * i + draw(st.integers(0, 16 * MiB - 1)) if kind != "logical" else None
        records.append(
            rec(f"r{i:02d}", when, kind=kind, status=status, parent=parent, lsn=lsn, verified=draw(st.booleans()))
        )
    return records


policies = (
    st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 3), st.integers(0, 2))
    .filter(any)
    .map(lambda tiers: RetentionPolicy(*tiers))
)


def newest(records: list[BackupRecord]) -> BackupRecord:
    return max(records, key=lambda r: (r.stop_time or r.start_time, r.id))


def labels_of(record: BackupRecord, tz: str) -> dict[str, str]:
    """Bucket labels computed independently of the module under test."""
    local = (record.stop_time or record.start_time).astimezone(ZoneInfo(tz))
    year, week, _ = local.isocalendar()
    return {
        "daily": local.date().isoformat(),
        "weekly": f"{year}-W{week:02d}",
        "monthly": f"{local.year}-{local.month:02d}",
        "yearly": str(local.year),
    }


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(records=histories(), policy=policies, tz=st.sampled_from(ZONES), skew=st.integers(-3 * 24 * 60, 60 * 24 * 60))
def test_plan_invariants(records: list[BackupRecord], policy: RetentionPolicy, tz: str, skew: int) -> None:
    last = max((r.stop_time or r.start_time for r in records), default=datetime(2026, 1, 1, tzinfo=UTC))
    now = last + timedelta(minutes=skew)
    plan = plan_retention(records, policy, now=now, tz=tz)
    kept, by_id = kept_ids(plan), {r.id: r for r in records}
    good = [r for r in records if r.status == "DONE"]
    # every backup has exactly one decision, with a reason
    assert sorted(d.record.id for d in plan.decisions) == sorted(by_id)
    assert all(d.reasons and all(d.reasons) for d in plan.decisions)
    # the newest good and the newest verified backups stay
    if good:
        assert newest(good).id in kept
    verified = [r for r in records if r.verified_at is not None]
    if verified:
        assert newest(verified).id in kept
    # at least one good backup stays; with no good backup nothing at all is deleted
    assert sum(1 for r in good if r.id in kept) >= min(len(good), 1)
    if not good:
        assert plan.delete == ()
    # every kept, restorable incremental keeps its whole chain of parents
    for r in plan.keep:
        if r.status == "FAILED":
            continue
        chain = r
        while chain.parent and chain.parent in by_id:
            chain = by_id[chain.parent]
            assert chain.id in kept, f"{r.id} is kept but its ancestor {chain.id} is not"
    # each of the newest N buckets of each tier that holds a good backup keeps one of them
    for tier in ("daily", "weekly", "monthly", "yearly"):
        buckets: dict[str, list[str]] = {}
        for r in good:
            buckets.setdefault(labels_of(r, tz)[tier], []).append(r.id)
        for label in sorted(buckets, reverse=True)[: getattr(policy, tier)]:
            assert any(i in kept for i in buckets[label]), f"{tier} {label}: every good backup deleted"
    # the plan is deterministic and independent of the input order
    shuffled = plan_retention(list(reversed(records)), policy, now=now, tz=tz)
    assert shuffled.decisions == plan.decisions
    assert plan.render() == shuffled.render()


@PROPERTY_SETTINGS
@given(records=histories(), policy=policies, tz=st.sampled_from(ZONES), ahead=st.integers(1, 400))
def test_the_clock_does_not_decide_for_finished_backups(
    records: list[BackupRecord], policy: RetentionPolicy, tz: str, ahead: int
) -> None:
    finished = [r for r in records if r.status != "STARTED"]
    last = max((r.stop_time or r.start_time for r in finished), default=datetime(2026, 1, 1, tzinfo=UTC))
    on_time = plan_retention(finished, policy, now=last, tz=tz)
    late = plan_retention(finished, policy, now=last + timedelta(days=ahead), tz=tz)
    assert late.decisions == on_time.decisions


@PROPERTY_SETTINGS
@given(
    records=histories(),
    policy=policies,
    tz=st.sampled_from(ZONES),
    failures=st.lists(st.integers(0, 10**7), min_size=1, max_size=40),
)
def test_failures_never_push_good_backups_out(
    records: list[BackupRecord], policy: RetentionPolicy, tz: str, failures: list[int]
) -> None:
    assume(records)
    first = min(r.stop_time or r.start_time for r in records)
    last = max(r.stop_time or r.start_time for r in records)
    now = last + timedelta(hours=1)
    before = plan_retention(records, policy, now=now, tz=tz)
    extra = [rec(f"x{i:03d}", first + timedelta(minutes=m), status="FAILED") for i, m in enumerate(failures)]
    after = plan_retention(records + extra, policy, now=now, tz=tz)
    kept_good_before = {r.id for r in before.keep if r.status == "DONE"}
    kept_good_after = {r.id for r in after.keep if r.status == "DONE"}
    assert kept_good_before <= kept_good_after


@PROPERTY_SETTINGS
@given(
    size=st.sampled_from([MiB * 2**k for k in range(11)]),
    starts=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
    archived=st.sets(st.integers(0, 3000), max_size=80),
    declare=st.booleans(),
)
def test_wal_needed_by_kept_backups_is_never_deleted(
    size: int, starts: list[int], archived: set[int], declare: bool
) -> None:
    """Whatever the real segment size, and whether or not it is known, no needed WAL segment is deleted."""
    t = datetime(2026, 1, 1, tzinfo=UTC)
    records = [rec(f"f{i}", t + timedelta(days=i), lsn=n * MiB + 40) for i, n in enumerate(starts)]
    names = [f"wal/{segment_name_from_number(1, n, wal_segment_size=size)}" for n in sorted(archived)]
    plan = plan_retention(
        records, RetentionPolicy(daily=len(records)), now=t, wal=names, wal_segment_size=size if declare else None
    )
    oldest_start = min(starts) * MiB + 40
    for name in plan.wal_delete:
        segno = parse_segment_name(name.removeprefix("wal/"), wal_segment_size=size).segno
        assert (segno + 1) * size <= oldest_start, f"{name} ends after {format_lsn(oldest_start)}"
    if declare:  # with the size known, everything wholly before the oldest start goes
        assert len(plan.wal_delete) == sum(1 for n in archived if (n + 1) * size <= oldest_start)
