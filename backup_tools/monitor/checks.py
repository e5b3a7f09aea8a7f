"""Repository health checks for `backup-tools check`: freshness, failures, size, WAL, verification (the checks of
restore tests, drills, bucket backups and capacity are in monitor/coverage.py)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from backup_tools.catalog import WAL, BackupRecord
from backup_tools.errors import BackupToolsError, UsageError
from backup_tools.monitor.config import MonitorConfig
from backup_tools.repo.base import Repository
from backup_tools.repo.objects import read_envelope
from backup_tools.units import format_bytes, format_seconds
from backup_tools.wal.archive import check_continuity, wal_names
from backup_tools.wal.lsn import classify, parse_lsn, parse_segment_name, segment_name
from backup_tools.wal.verify import listing_problems

Severity = Literal["ok", "warning", "critical"]
PHYSICAL = ("full", "incremental")


@dataclass(frozen=True)
class CheckOutcome:
    """One check's verdict: its name, whether it passed, how bad a failure is, one line, and the figures behind it."""

    name: str
    ok: bool
    severity: Severity
    message: str
    figures: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The check on one line, as `backup-tools check` prints it."""
        return f"{'OK' if self.ok else self.severity.upper():8} {self.name}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 strings)."""
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _ok(name: str, message: str, **figures: Any) -> CheckOutcome:
    return CheckOutcome(name, True, "ok", message, figures)


def _fail(name: str, severity: Severity, message: str, **figures: Any) -> CheckOutcome:
    return CheckOutcome(name, False, severity, message, figures)


def series_of(record: BackupRecord) -> str:
    """'logical' or 'physical' (full and incremental backups form one series)."""
    return "logical" if record.kind == "logical" else "physical"


def finished_at(record: BackupRecord) -> datetime:
    """When a backup finished according to its catalog record (its start time if no stop time was recorded)."""
    return record.stop_time or record.start_time


def _age(seconds: float) -> str:
    return format_seconds(max(seconds, 0.0))


def _live(records: list[BackupRecord]) -> list[BackupRecord]:
    """Records not being deleted by prune (prune marks those FAILED with options.deleting)."""
    return [r for r in records if not r.options.get("deleting")]


def check_freshness(records: list[BackupRecord], config: MonitorConfig, now: datetime) -> list[CheckOutcome]:
    """The newest DONE backup per series (or kind, when configured per kind) is younger than its limit."""
    wanted = dict(config.max_age_by_series)
    if not wanted:
        present = sorted({series_of(r) for r in records})
        wanted = {s: config.max_age for s in present}
    if not wanted:
        return [_fail("freshness", "critical", "no backup in the repository: take one with `backup-tools backup`")]
    out = []
    for name, limit in sorted(wanted.items()):
        good = [r for r in records if r.is_good and (r.kind == name or series_of(r) == name)]
        check = f"freshness:{name}"
        if not good:
            out.append(_fail(check, "critical", f"no finished {name} backup in the repository (limit "
                             f"{_age(limit.total_seconds())})",
                             limit_seconds=limit.total_seconds()))  # fmt: skip
            continue
        newest = max(good, key=finished_at)
        age = (now - finished_at(newest)).total_seconds()
        figures = {"newest": newest.id, "finished_at": finished_at(newest), "age_seconds": age,
                   "limit_seconds": limit.total_seconds()}  # fmt: skip
        if age > limit.total_seconds():
            text = (f"newest {name} backup {newest.id} finished {_age(age)} ago (limit {_age(limit.total_seconds())}); "
                    "is the backup schedule running? see its cron/systemd log")  # fmt: skip
            out.append(_fail(check, "critical", text, **figures))
        else:
            out.append(_ok(check, f"newest {name} backup {newest.id} finished {_age(age)} ago", **figures))
    return out


def check_failures(records: list[BackupRecord], config: MonitorConfig, now: datetime) -> list[CheckOutcome]:
    """Per series, the newest backups FAILED; and backups STARTED long ago that never finished."""
    out = []
    for series in sorted({series_of(r) for r in records}):
        finished = [r for r in _live(records) if series_of(r) == series and r.status != "STARTED"]
        failed = 0
        for record in reversed(finished):
            if record.status != "FAILED":
                break
            failed += 1
        check = f"failures:{series}"
        if failed >= config.failed_after and failed:
            newest = finished[-1]
            good = [r for r in finished if r.is_good]
            last_good = f"last good backup {good[-1].id}" if good else "no good backup at all"
            error = str(newest.options.get("error") or "no error recorded")
            text = (f"the newest {failed} {series} backup(s) FAILED, newest {newest.id}: {error}; {last_good}; "
                    "fix the cause and take a backup now")  # fmt: skip
            out.append(_fail(check, "critical", text, consecutive_failed=failed, newest_failed=newest.id))
        else:
            out.append(_ok(check, f"newest {series} backup did not fail", consecutive_failed=failed))
    limit = config.stuck_after.total_seconds()
    stuck = [r for r in records if r.status == "STARTED" and (now - r.start_time).total_seconds() > limit]
    if stuck:
        oldest = stuck[0]
        text = (f"{len(stuck)} backup(s) STARTED more than {_age(limit)} ago and never finished, oldest {oldest.id} "
                f"({_age((now - oldest.start_time).total_seconds())} ago); a hung or killed backup: check its process "
                "and the repository lock")  # fmt: skip
        out.append(_fail("stuck", "warning", text, stuck=[r.id for r in stuck]))
    elif records:
        out.append(_ok("stuck", f"no backup running longer than {_age(limit)}", stuck=[]))
    return out


def check_sizes(records: list[BackupRecord], config: MonitorConfig) -> list[CheckOutcome]:
    """The newest good backup's size per kind against the median of the previous ones of that kind."""
    out = []
    for kind in config.size_kinds:
        good = [r for r in records if r.is_good and r.kind == kind]
        if not good:
            continue
        newest, previous = good[-1], good[-1 - config.size_window : -1]
        check = f"size:{kind}"
        figures: dict[str, Any] = {"newest": newest.id, "size": newest.size, "history": len(previous)}
        if newest.size == 0:
            out.append(_fail(check, "critical", f"newest {kind} backup {newest.id} is empty (0 bytes)", **figures))
            continue
        if len(previous) < config.size_min_history:
            history = f"({len(previous)} of {config.size_min_history})"
            text = f"{format_bytes(newest.size)}; too little history to compare {history}"
            out.append(_ok(check, text, **figures))
            continue
        median = statistics.median(r.size for r in previous)
        ratio = newest.size / median if median else float("inf")
        figures |= {"median": median, "ratio": round(ratio, 4)}
        compared = f"{format_bytes(newest.size)} vs median {format_bytes(median)} of the previous {len(previous)}"
        if ratio < config.size_min_ratio:
            text = (f"newest {kind} backup {newest.id} is only {ratio:.0%} of the usual size ({compared}): "
                    "an empty or partial dump? check the backup log and restore-test it")  # fmt: skip
            out.append(_fail(check, "critical", text, **figures))
        elif ratio > config.size_max_ratio:
            text = (f"newest {kind} backup {newest.id} is {ratio:.1f}x the usual size ({compared}): "
                    "unexpected growth or the wrong database? check what was backed up")  # fmt: skip
            out.append(_fail(check, "warning", text, **figures))
        else:
            out.append(_ok(check, f"{compared} ({ratio:.0%})", **figures))
    return out


def check_wal(
    repo: Repository, records: list[BackupRecord], config: MonitorConfig, now: datetime
) -> list[CheckOutcome]:
    """No WAL gap from the oldest kept physical backup on, each backup's own WAL present, archiving not stalled."""
    physical = [r for r in records if r.is_good and r.kind in PHYSICAL and r.start_lsn]
    names, damaged = listing_problems(repo)  # the cheap part of `verify --wal`: one listing, names and sizes
    if not physical and not names and not damaged:
        return []
    if damaged:
        text = (f"{len(damaged)} object(s) under wal/ are not archived WAL: "
                + "; ".join(f"{k}: {v}" for k, v in sorted(damaged.items())[:5])
                + "; run `backup-tools verify --wal` and re-archive or remove them")  # fmt: skip
        listing = _fail("wal:objects", "critical", text, damaged=damaged)
    else:
        listing = _ok("wal:objects", f"{len(names)} archived WAL file name(s) and size(s) look right", count=len(names))
    size = int(physical[0].options.get("wal_segment_size", 16 * 1024 * 1024)) if physical else 16 * 1024 * 1024
    report = check_continuity(repo, wal_segment_size=size, names=names, records=records)
    floor = None
    if physical:
        start = parse_segment_name(_segment_of(physical[0], size), wal_segment_size=size)
        floor = (start.timeline, start.segno)
    relevant, ignored = [], 0
    for timeline, gaps in sorted(report.gaps.items()):
        for gap in gaps:
            last = parse_segment_name(gap.last, wal_segment_size=size).segno
            if floor is None or timeline > floor[0] or (timeline == floor[0] and last >= floor[1]):
                relevant.append(gap)
            else:
                ignored += 1
    missing = {k: v for k, v in report.missing_for_backups.items() if v}
    figures = {"gaps": [asdict(g) for g in relevant], "gaps_before_oldest_backup": ignored,
               "missing_for_backups": missing, "timelines": report.timelines}  # fmt: skip
    problems = [f"GAP on timeline {g.timeline}: {g.first} .. {g.last} ({g.count} segment(s))" for g in relevant]
    problems += [f"backup {b} lacks its own WAL {v[0]} .. {v[-1]}" for b, v in sorted(missing.items())]
    if problems:
        text = "; ".join(problems) + "; point-in-time recovery cannot cross a gap: take a new full backup now"
        out = [_fail("wal:continuity", "critical", text, **figures)]
    else:
        span = ", ".join(f"timeline {tl}: {a} .. {b}" for tl, (a, b) in sorted(report.timelines.items()))
        out = [_ok("wal:continuity", f"no gap ({span or 'no segments'})", **figures)]
    return [listing, *out, _archiving(repo, names, physical, config, now)]


def _segment_of(record: BackupRecord, size: int) -> str:
    return segment_name(record.timeline or 1, parse_lsn(record.start_lsn or "0/0"), wal_segment_size=size)


def _archiving(
    repo: Repository, names: list[str], physical: list[BackupRecord], config: MonitorConfig, now: datetime
) -> CheckOutcome:
    """The newest archived segment's push time (from its own header, never an mtime) is recent enough."""
    segments = [n for n in names if (w := classify(n)) is not None and w.kind == "segment"]
    if not segments:
        return _fail("wal:archiving", "critical", "physical backups but no archived WAL segment: check archive_mode "
                     "and archive_command (backup-tools wal-push %p --repo ...)")  # fmt: skip
    newest = max(segments)
    try:
        header, raw = read_envelope(repo, f"{WAL}/{newest}")
        raw.close()
        pushed = datetime.fromisoformat(header["pushed_at"])
    except (BackupToolsError, KeyError, ValueError, TypeError) as e:
        return _fail("wal:archiving", "critical", f"cannot read when {newest} was archived: {e}", newest=newest)
    age, limit = (now - pushed).total_seconds(), config.wal_max_age.total_seconds()
    figures = {"newest": newest, "pushed_at": pushed, "age_seconds": age, "limit_seconds": limit}
    if age > limit:
        text = (f"archiving stalled: the newest WAL segment {newest} was archived {_age(age)} ago (limit "
                f"{_age(limit)}); check pg_stat_archiver (last_failed_wal) and the server log, and set "
                "archive_timeout below the limit on quiet servers")  # fmt: skip
        return _fail("wal:archiving", "critical", text, **figures)
    return _ok("wal:archiving", f"newest segment {newest} archived {_age(age)} ago", **figures)


@dataclass(frozen=True)
class Freshness:
    """How one per-series freshness check words itself: verified (checksums) or restore-tested."""

    check: str  # check name prefix, e.g. "verified"
    figure: str  # figure holding the newest stamp, e.g. "last_verified_at"
    last: str  # "last verified" -> "last verified 2 h ago"
    first: str  # ok text before any stamp, with {age}
    never: str  # fail text before any stamp
    missing: str  # fail text with {series}, {limit} and {last}


VERIFIED = Freshness(
    "verified", "last_verified_at", "last verified", "not verified yet (first backup {age} old)", "never verified",
    "no {series} backup verified (checksums) within {limit} ({last}); run `backup-tools verify --repo URL` on a "
    "schedule",
)  # fmt: skip


def series_freshness(
    records: list[BackupRecord],
    now: datetime,
    *,
    limit: float,
    stamp: Callable[[BackupRecord], datetime | None],
    words: Freshness,
) -> list[CheckOutcome]:
    """Per series, some good backup carries a stamp within limit seconds (new series get that long to start)."""
    out = []
    for series in sorted({series_of(r) for r in records if r.is_good}):
        good = [r for r in records if r.is_good and series_of(r) == series]
        stamps = [t for r in good if (t := stamp(r))]
        since = max(stamps) if stamps else min(finished_at(r) for r in good)
        age = (now - since).total_seconds()
        figures = {words.figure: max(stamps) if stamps else None, "age_seconds": age, "limit_seconds": limit}
        check = f"{words.check}:{series}"
        last = f"{words.last} {_age(age)} ago"
        if age <= limit:
            out.append(_ok(check, last if stamps else words.first.format(age=_age(age)), **figures))
            continue
        text = words.missing.format(series=series, limit=_age(limit), last=last if stamps else words.never)
        out.append(_fail(check, "warning", text, **figures))
    return out


def check_verified(records: list[BackupRecord], config: MonitorConfig, now: datetime) -> list[CheckOutcome]:
    """Per series, some good backup was verified within the limit (new repositories get that long to start)."""
    limit = config.verify_max_age.total_seconds()
    return series_freshness(records, now, limit=limit, stamp=lambda r: r.verified_at, words=VERIFIED)


def check_encryption(repo: Repository, records: list[BackupRecord], *, newest_wal: int = 32) -> list[CheckOutcome]:
    """Every backup, and the newest WAL objects' headers, are encrypted as the repository's policy says."""
    from backup_tools.repo.policy import breaches

    wal_keys = [f"{WAL}/{n}" for n in wal_names(repo)][-newest_wal:]
    policy, bad = breaches(repo, records, wal_keys)
    if policy is None:
        return []
    if bad:
        text = (f"{len(bad)} object(s) break the encryption policy ({policy}): {', '.join(bad[:5])}"
                f"{' …' if len(bad) > 5 else ''}; take a new backup with the policy's key, then prune or rekey")  # fmt: skip
        return [_fail("encryption", "critical", text, policy=policy, breaches=bad)]
    return [_ok("encryption", f"backups and the newest WAL follow the policy ({policy})", policy=policy)]


def run_checks(repo: Repository, config: MonitorConfig, *, now: datetime | None = None) -> list[CheckOutcome]:
    """Run every check; an unreadable repository is itself a failed check (so it can be alerted on)."""
    from backup_tools.monitor.coverage import check_buckets, check_capacity, check_repo_drills, check_restore_tested

    now = now or datetime.now(UTC)
    try:
        records = repo.list_backups()
        results = check_freshness(records, config, now) + check_failures(records, config, now)
        results += check_sizes(records, config) + check_wal(repo, records, config, now)
        results += check_verified(records, config, now) + check_restore_tested(records, config, now)
        results += check_buckets(repo, config, now) + check_capacity(repo, config)
        results += check_encryption(repo, records)
    except UsageError:
        raise
    except BackupToolsError as e:
        results = [_fail("repository", "critical", f"cannot read {repo.url}: {e}")]
    return results + check_repo_drills(repo.url, config, now)
