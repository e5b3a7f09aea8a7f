"""Lifecycle tiers: S3 lifecycle rules that move monthly backups to GLACIER and yearly ones to DEEP_ARCHIVE.

From [retention.tiers] (`monthly = 30` or `monthly = { after_days = 30, storage_class = "GLACIER" }`),
`apply` writes one bucket lifecycle rule per tier, filtered on the repository's `backups/` prefix and the
object tag `pgdrill-tier=<tier>`, keeps every other rule of the bucket, and tags the data objects of the
backups the GFS plan keeps as monthly or yearly (catalog.json and backup_manifest are never tagged: they
must stay readable at once). `check` reads the rules and tags back and reports drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backup_tools.errors import UsageError

TAG = "pgdrill-tier"
DEFAULT_CLASS = {"monthly": "GLACIER", "yearly": "DEEP_ARCHIVE"}
CLASSES = ("STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")


@dataclass(frozen=True)
class Tier:
    """Objects of backups kept as `name` move to storage_class after_days after they were written."""

    name: str
    after_days: int
    storage_class: str


def parse_tiers(config: Mapping[str, Any] | None) -> tuple[Tier, ...]:
    """Tiers from [retention.tiers]; an empty or missing table is a usage error (nothing to apply)."""
    tiers = []
    for name, value in (config or {}).items():
        if name not in DEFAULT_CLASS:
            raise UsageError(f"unknown tier {name!r} in [retention.tiers]: use monthly or yearly")
        spec = value if isinstance(value, Mapping) else {"after_days": value}
        days, cls = spec.get("after_days"), spec.get("storage_class", DEFAULT_CLASS[name])
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 36500:
            raise UsageError(f"[retention.tiers] {name}: after_days = {days!r}; use a whole number of days 0..36500")
        if cls not in CLASSES:
            raise UsageError(f"[retention.tiers] {name}: storage_class {cls!r}; use one of {', '.join(CLASSES)}")
        tiers.append(Tier(name, days, cls))
    if not tiers:
        raise UsageError("no [retention.tiers] in the config: add e.g. monthly = 30 and yearly = 365 (days)")
    return tuple(tiers)


def _rule_id(repo: Any, tier: str) -> str:
    return f"pgdrill-{tier}:{repo.prefix or '/'}"


def desired_rules(repo: Any, tiers: tuple[Tier, ...]) -> list[dict[str, Any]]:
    """The lifecycle rules this repository should have, one per tier."""
    prefix = f"{repo.prefix}/backups/" if repo.prefix else "backups/"
    return [
        {"ID": _rule_id(repo, t.name), "Status": "Enabled",
         "Filter": {"And": {"Prefix": prefix, "Tags": [{"Key": TAG, "Value": t.name}]}},
         "Transitions": [{"Days": t.after_days, "StorageClass": t.storage_class}]}
        for t in tiers
    ]  # fmt: skip


def _tier_of(reasons: tuple[str, ...]) -> str | None:
    for tier in ("yearly", "monthly"):
        if any(r.startswith(f"{tier} ") for r in reasons):
            return tier
    return None


def tier_targets(repo: Any, policy: Any, *, now: datetime) -> dict[str, str]:
    """Object key (relative) -> tier, for the data objects of backups the plan keeps as monthly or yearly."""
    from backup_tools.lifecycle.retention import plan_retention
    from backup_tools.repo.s3.repository import METADATA

    plan = plan_retention(repo.list_backups(), policy, now=now)
    out = {}
    for d in plan.decisions:
        tier = _tier_of(d.reasons) if d.keep else None
        if tier:
            out |= {f"backups/{d.record.id}/{f.name}": tier for f in d.record.files if f.name not in METADATA}
    return out


@dataclass(frozen=True)
class PolicyReport:
    """What apply changed or check found: ok lines and drift lines."""

    ok: list[str]
    drift: list[str]


def storage_policy(repo: Any, tiers: tuple[Tier, ...], policy: Any, *, now: datetime, apply: bool) -> PolicyReport:
    """Compare (and with apply, make equal) the bucket's rules and the objects' tier tags with the config."""
    ok, drift = [], []
    from backup_tools.repo.s3.tiering import get_rules, get_tags, put_rules, put_tags

    current = get_rules(repo)
    wanted = desired_rules(repo, tiers)
    ours = {
        r["ID"]: r
        for r in current
        if r.get("ID", "").startswith("pgdrill-") and r["ID"].endswith(":" + (repo.prefix or "/"))
    }
    for rule in wanted:
        have = ours.pop(rule["ID"], None)
        what = (
            f"rule {rule['ID']}: {rule['Transitions'][0]['StorageClass']} after {rule['Transitions'][0]['Days']} days"
        )
        if have is None:
            drift.append(f"{what}: missing (removed by hand?)")
        elif _norm(have) != _norm(rule):
            drift.append(f"{what}: differs in the bucket ({_describe(have)})")
        else:
            ok.append(what)
    drift += [f"rule {rid}: not in the config ({_describe(r)})" for rid, r in ours.items()]
    targets = tier_targets(repo, policy, now=now)
    untagged = {k: t for k, t in targets.items() if {"Key": TAG, "Value": t} not in get_tags(repo, k)}
    if untagged:
        drift.append(f"{len(untagged)} object(s) of monthly/yearly backups lack their {TAG} tag")
    else:
        ok.append(f"{len(targets)} object(s) of monthly/yearly backups carry their {TAG} tag")
    if apply and drift:
        keep = [r for r in current if r.get("ID") not in {w["ID"] for w in wanted} and r.get("ID") not in ours]
        put_rules(repo, keep + wanted)
        for key, tier in untagged.items():
            put_tags(repo, key, [t for t in get_tags(repo, key) if t["Key"] != TAG] + [{"Key": TAG, "Value": tier}])
    return PolicyReport(ok, drift)


def _norm(rule: dict[str, Any]) -> tuple[Any, ...]:
    f = rule.get("Filter", {}).get("And", {})
    tags = tuple(sorted((t["Key"], t["Value"]) for t in f.get("Tags", [])))
    trans = tuple(sorted((t.get("Days"), t.get("StorageClass")) for t in rule.get("Transitions", [])))
    return rule.get("Status"), f.get("Prefix"), tags, trans


def _describe(rule: dict[str, Any]) -> str:
    status, prefix, tags, trans = _norm(rule)
    moves = ", ".join(f"{c} after {d} days" for d, c in trans) or "no transition"
    return f"{status}, prefix {prefix}, tags {dict(tags)}, {moves}"
