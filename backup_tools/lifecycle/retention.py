"""GFS retention: plan from catalog times which backups and WAL to keep (lifecycle/prune.py applies a plan)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backup_tools.catalog import BackupRecord
from backup_tools.errors import UsageError
from backup_tools.lifecycle.labels import LabelRule, parse_label_rules
from backup_tools.wal.lsn import MAX_WAL_SEGMENT_SIZE, check_segment_size, classify, parse_lsn, parse_segment_name

TIERS = ("daily", "weekly", "monthly", "yearly")
PHYSICAL = ("full", "incremental")
# A STARTED backup younger than this (by the caller's clock) may still be running and is never deleted.
STALE_STARTED = timedelta(days=1)
# Set (with status FAILED, so no reader takes it for good) before a backup's objects go; a rerun finishes it.
DELETING = "deleting"
FINISHING = "half-deleted by an earlier prune: finishing"


@dataclass(frozen=True)
class RetentionPolicy:
    """How many of the newest daily, ISO-weekly, monthly and yearly buckets keep a backup."""

    daily: int = 30
    weekly: int = 12
    monthly: int = 12
    yearly: int = 7
    labels: tuple[LabelRule, ...] = ()  # per-purpose rules; a labelled backup is kept by its label, not by GFS

    def __post_init__(self) -> None:
        for tier in TIERS:
            value = getattr(self, tier)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100_000:
                raise UsageError(
                    f"retention {tier} = {value!r} is invalid: use a whole number of {tier} backups to keep, 0..100000"
                )
        if not any(getattr(self, tier) for tier in TIERS):
            raise UsageError("retention keeps no buckets (all tiers are 0): set daily, weekly, monthly or yearly > 0")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> RetentionPolicy:
        """Build a policy from a config table such as {"daily": 30, "weekly": 12}; missing tiers use defaults."""
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise UsageError(f"retention config must be a table of {', '.join(TIERS)}, got {type(config).__name__}")
        unknown = sorted(set(config) - {*TIERS, "labels", "tiers"})
        if unknown:
            raise UsageError(
                f"unknown retention setting(s) {', '.join(map(str, unknown))}: use {', '.join(TIERS)} or [labels]"
            )
        labels = config.get("labels", {})
        if not isinstance(labels, Mapping):
            raise UsageError('retention labels must be a table such as [retention.labels] predeploy = "30d"')
        return cls(**{k: config[k] for k in TIERS if k in config}, labels=parse_label_rules(labels))

    def rule(self, label: str) -> LabelRule | None:
        """The keep rule of a label (None when the config has none)."""
        return next((r for r in self.labels if r.label == label), None)

    def __str__(self) -> str:
        gfs = ", ".join(f"{tier} {getattr(self, tier)}" for tier in TIERS)
        return gfs + "".join(f"; label {r}" for r in self.labels)


@dataclass(frozen=True)
class Decision:
    """Keep or delete one backup, and why."""

    record: BackupRecord
    keep: bool
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        """All reasons on one line."""
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class RetentionPlan:
    """Per-backup decisions (newest first) and the WAL files that no kept backup needs."""

    decisions: tuple[Decision, ...]
    policy: RetentionPolicy
    now: datetime
    tz: str
    wal_delete: tuple[str, ...] = ()
    wal_note: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def keep(self) -> tuple[BackupRecord, ...]:
        """Backups that stay."""
        return tuple(d.record for d in self.decisions if d.keep)

    @property
    def delete(self) -> tuple[BackupRecord, ...]:
        """Backups to delete."""
        return tuple(d.record for d in self.decisions if not d.keep)

    def decision(self, backup_id: str) -> Decision:
        """The decision about one backup."""
        for d in self.decisions:
            if d.record.id == backup_id:
                return d
        raise KeyError(backup_id)

    def render(self) -> str:
        """The plan as a readable table, for `backup-tools prune --dry-run`."""
        zone = _zone(self.tz)
        rows = [("action", "id", f"time ({self.tz})", "kind", "status", "reason")]
        for d in self.decisions:
            when = catalog_time(d.record).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
            rows.append(("keep" if d.keep else "DELETE", d.record.id, when, d.record.kind, d.record.status, d.reason))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [f"retention plan at {self.now.isoformat()} ({self.policy}; buckets in {self.tz})"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[5] for r in rows]
        freed = sum(r.size for r in self.delete)
        lines.append(f"backups: keep {len(self.keep)}, delete {len(self.delete)} ({freed} bytes)")
        lines.append(f"WAL: delete {len(self.wal_delete)} file(s); {self.wal_note}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def catalog_time(record: BackupRecord) -> datetime:
    """The time a backup is bucketed by: stop_time, else start_time (never a file mtime); naive means UTC."""
    when = record.stop_time or record.start_time
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _order(record: BackupRecord) -> tuple[datetime, str]:
    return catalog_time(record), record.id


def _age(record: BackupRecord, now: datetime) -> timedelta:
    start = record.start_time
    return now - (start.replace(tzinfo=UTC) if start.tzinfo is None else start)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise UsageError(f"unknown time zone {tz!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'") from e


def bucket_labels(when: datetime, tz: str = "UTC") -> dict[str, str]:
    """Calendar day, ISO week, month and year of an instant in a time zone, e.g. {"weekly": "2026-W46", ...}."""
    local = (when.replace(tzinfo=UTC) if when.tzinfo is None else when).astimezone(_zone(tz))
    iso = local.isocalendar()
    return {
        "daily": f"{local.year:04d}-{local.month:02d}-{local.day:02d}",
        "weekly": f"{iso.year:04d}-W{iso.week:02d}",
        "monthly": f"{local.year:04d}-{local.month:02d}",
        "yearly": f"{local.year:04d}",
    }


def _series(record: BackupRecord) -> str:
    return "physical" if record.kind in PHYSICAL else record.kind


def plan_retention(
    records: Iterable[BackupRecord],
    policy: RetentionPolicy,
    *,
    now: datetime,
    tz: str = "UTC",
    wal: Iterable[str] = (),
    wal_segment_size: int | None = None,
    locked: Mapping[str, datetime] | None = None,
) -> RetentionPlan:
    """Decide per backup keep/delete under a GFS policy (logical and physical backups counted separately).

    locked: backups under S3 Object Lock until a date; they are kept (with their parents and WAL) until then.
    """
    if now.tzinfo is None:
        raise UsageError("`now` must be timezone-aware (e.g. datetime.now(UTC)); a naive time is ambiguous")
    _zone(tz)
    recs = sorted(records, key=_order)
    by_id = {r.id: r for r in recs}
    if len(by_id) != len(recs):
        raise UsageError("duplicate backup ids in the catalog; repair the repository before pruning")
    keep: dict[str, list[str]] = defaultdict(list)
    delete: dict[str, str] = {}
    warnings: list[str] = []
    frozen: set[str] = set()
    live = [r for r in recs if not r.options.get(DELETING)]
    _check_labels(live, policy)
    for r in recs:
        if r.options.get(DELETING):
            delete[r.id] = FINISHING
    for series in sorted({_series(r) for r in live}):
        members = [r for r in live if _series(r) == series]
        _plan_series(members, policy, now=now, tz=tz, keep=keep, delete=delete)
        settled = [r for r in members if not (r.status == "STARTED" and _age(r, now) < STALE_STARTED)]
        if not settled or not settled[-1].is_good:
            frozen.add(series)
    for backup_id, until in (locked or {}).items():
        if backup_id in by_id and not by_id[backup_id].options.get(DELETING):
            keep[backup_id].append(f"Object Lock until {until.astimezone(UTC):%Y-%m-%d %H:%M} UTC: deletable after")
    _keep_parents(recs, by_id, keep, warnings)
    has_good = {_series(r) for r in live if r.is_good}
    for r in live:
        if r.id in keep:
            delete.pop(r.id, None)
        elif r.id not in delete:
            delete[r.id] = "outside retention: not the newest good backup of a kept bucket"
        if r.id in delete and _series(r) in frozen:
            why = "newest backups failed" if _series(r) in has_good else "no good backup yet"
            keep[r.id].append(f"{why}: nothing deleted (else: {delete.pop(r.id)})")
    decisions = tuple(
        Decision(r, r.id not in delete, tuple(dict.fromkeys(keep[r.id])) if r.id not in delete else (delete[r.id],))
        for r in reversed(recs)
    )
    kept = [d.record for d in decisions if d.keep]
    wal_delete, note = _plan_wal(kept, list(wal), frozen="physical" in frozen, size=wal_segment_size, warn=warnings)
    return RetentionPlan(decisions, policy, now, tz, tuple(wal_delete), note, tuple(warnings))


def _plan_series(
    members: list[BackupRecord],
    policy: RetentionPolicy,
    *,
    now: datetime,
    tz: str,
    keep: dict[str, list[str]],
    delete: dict[str, str],
) -> None:
    """Apply GFS buckets and the newest/failed/unfinished rules to one series (oldest first)."""
    good = [r for r in members if r.is_good]
    _keep_labelled(good, policy, now=now, keep=keep)
    unlabelled = [r for r in good if not r.options.get("label")]
    labels = {r.id: bucket_labels(catalog_time(r), tz) for r in unlabelled}
    for tier in TIERS:
        newest_in_bucket: dict[str, BackupRecord] = {}
        for r in unlabelled:  # oldest first, so the newest good backup of each bucket wins
            newest_in_bucket[labels[r.id][tier]] = r
        for label in sorted(newest_in_bucket, reverse=True)[: getattr(policy, tier)]:
            keep[newest_in_bucket[label].id].append(f"{tier} {label}")
    newest_good = good[-1] if good else None
    if newest_good:
        keep[newest_good.id].append("newest good backup")
    verified = [r for r in members if r.verified_at is not None]
    if verified:
        keep[verified[-1].id].append("newest verified backup")
    for r in members:
        newer = newest_good is None or _order(r) > _order(newest_good)
        ref = f"newest good backup {newest_good.id}" if newest_good else "any good backup"
        if r.status == "FAILED":
            if newer:
                keep[r.id].append(f"failed, newer than {ref}: kept for diagnosis")
            else:
                delete[r.id] = "failed backup"
        elif r.status == "STARTED":
            if newer:
                keep[r.id].append(f"unfinished (STARTED) newer than {ref} kept")
            elif _age(r, now) < STALE_STARTED:
                keep[r.id].append("unfinished (STARTED) less than a day old: may still be running")
            else:
                delete[r.id] = f"abandoned unfinished backup (STARTED before {ref})"


def _check_labels(records: list[BackupRecord], policy: RetentionPolicy) -> None:
    """A label with no rule is an error: guessing would delete (or keep forever) what the team meant otherwise."""
    missing = sorted(
        {str(r.options["label"]) for r in records if r.options.get("label")} - {x.label for x in policy.labels}
    )
    if missing:
        raise UsageError(
            f"backups are labelled {', '.join(missing)} but the retention config has no rule for "
            f'{"it" if len(missing) == 1 else "them"}: add e.g. {missing[0]} = 7 (newest 7) or {missing[0]} = "30d" '
            "under [retention.labels] (pass it with --config); nothing was deleted"
        )


def _keep_labelled(
    good: list[BackupRecord], policy: RetentionPolicy, *, now: datetime, keep: dict[str, list[str]]
) -> None:
    """Keep labelled good backups by their label's rule: the newest N, or those younger than the age."""
    for rule in policy.labels:
        mine = [r for r in good if r.options.get("label") == rule.label]
        if rule.count is not None:
            for r in mine[len(mine) - rule.count :] if rule.count else []:
                keep[r.id].append(f"label {rule.label}: one of the newest {rule.count}")
        else:
            for r in mine:
                if rule.age is not None and now - catalog_time(r) <= rule.age:
                    keep[r.id].append(f"label {rule.label}: younger than {rule.age.days}d")


def _keep_parents(
    recs: list[BackupRecord], by_id: dict[str, BackupRecord], keep: dict[str, list[str]], warnings: list[str]
) -> None:
    """Keep, transitively, every parent that a kept (non-failed) incremental needs to be restored."""
    pending = [r for r in reversed(recs) if r.id in keep and r.status != "FAILED" and not r.options.get(DELETING)]
    seen = {r.id for r in pending}
    children: dict[str, list[str]] = defaultdict(list)
    while pending:
        child = pending.pop(0)
        if not child.parent:
            continue
        parent = by_id.get(child.parent)
        if parent is None or parent.options.get(DELETING):
            state = "missing from the catalog" if parent is None else "half-deleted by an earlier prune"
            warnings.append(f"{child.id} needs parent {child.parent}, which is {state}: {child.id} cannot be restored")
            continue
        children[parent.id].append(child.id)
        if parent.id not in seen:
            seen.add(parent.id)
            pending.append(parent)
    for parent_id, kids in children.items():
        more = f" (and {len(kids) - 1} more)" if len(kids) > 1 else ""
        keep[parent_id].append(f"parent of incremental {max(kids, key=lambda k: _order(by_id[k]))}{more}")


def _plan_wal(
    kept: list[BackupRecord], names: list[str], *, frozen: bool, size: int | None, warn: list[str]
) -> tuple[list[str], str]:
    """WAL files wholly before the oldest kept physical backup's start LSN (history files always stay)."""
    needs = [r for r in kept if r.kind in PHYSICAL and r.status != "FAILED"]
    if frozen:
        return [], "nothing deleted: the newest physical backups failed"
    if not names:
        return [], "none in the repository"
    if not needs:
        return [], "left alone: no kept physical backup needs it (and none to measure from)"
    if any(r.is_good and not r.start_lsn for r in needs):
        warn.append("a kept physical backup has no start_lsn in its catalog; WAL left alone")
        return [], "left alone: cannot tell which WAL the kept backups need"
    try:
        starts = sorted((parse_lsn(r.start_lsn), r.id, r) for r in needs if r.start_lsn)
    except UsageError as e:
        warn.append(f"a kept physical backup has a bad start_lsn ({e}); WAL left alone")
        return [], "left alone: cannot tell which WAL the kept backups need"
    start_lsn, _, oldest = starts[0]
    wal_files = [(n, w) for n in names if (w := classify(n.rsplit("/", 1)[-1])) and w.segment]
    sizes = {r.options["wal_segment_size"] for r in needs if r.options.get("wal_segment_size")}
    if size is None and len(sizes) > 1:
        warn.append(f"kept backups record different wal_segment_size values {sorted(sizes)}; WAL left alone")
        return [], "left alone: conflicting segment sizes"
    if size is None and sizes:
        size = sizes.pop()
    assumed = ""
    if size is None:  # an upper bound from the highest seg part present; erring large only keeps more WAL
        assumed = "at most "
        per_log_at_least = max((int(w.segment[16:], 16) for _, w in wal_files if w.segment), default=0) + 1
        size = min(MAX_WAL_SEGMENT_SIZE, 1 << ((1 << 32) // per_log_at_least).bit_length() - 1)
    check_segment_size(size)
    cutoff = start_lsn // size
    delete = []
    for name, w in wal_files:
        try:
            segno = parse_segment_name(w.name, wal_segment_size=size).segno
        except UsageError as e:
            warn.append(f"{e}; WAL left alone")
            return [], f"left alone: WAL names do not fit wal_segment_size {size}"
        if segno < cutoff:
            delete.append((segno, name))
    where = f"{oldest.start_lsn} on timeline {oldest.timeline}"
    note = f"kept from the oldest kept physical backup {oldest.id} at {where} (segments of {assumed}{size} bytes)"
    return [name for _, name in sorted(delete)], note
