"""Checks of what protects a repository beyond its backups: restore tests of it, bucket backups, free capacity."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from backup_tools.catalog import BackupRecord
from backup_tools.errors import BackupToolsError
from backup_tools.monitor.checks import CheckOutcome, Freshness, Severity, series_freshness
from backup_tools.monitor.config import MonitorConfig
from backup_tools.monitor.history import read_history
from backup_tools.pg.run import redact
from backup_tools.repo.base import Repository
from backup_tools.units import format_bytes, format_seconds

RESTORE_TESTED_AT = "restore_tested_at"  # catalog option `verify --restore-test` sets when the restore test passed


def _ok(name: str, message: str, **figures: Any) -> CheckOutcome:
    return CheckOutcome(name, True, "ok", message, figures)


def _fail(name: str, severity: Severity, message: str, **figures: Any) -> CheckOutcome:
    return CheckOutcome(name, False, severity, message, figures)


def _age(seconds: float) -> str:
    return format_seconds(max(seconds, 0.0))


def restore_tested_at(record: BackupRecord) -> datetime | None:
    """When `verify --restore-test` last restored this backup and its data checks passed (None: never)."""
    value = record.options.get(RESTORE_TESTED_AT)
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


RESTORE_TESTED = Freshness(
    "restore_tested", "last_restore_tested_at", "last restore test", "not restore-tested yet (first {age} old)",
    "never restore-tested (a checksum verify is not one)",
    "no {series} backup restore-tested within {limit} ({last}); run `backup-tools verify --repo URL --restore-test` "
    "or a restore-test drill with --source-repo on a schedule",
)  # fmt: skip


def check_restore_tested(records: list[BackupRecord], config: MonitorConfig, now: datetime) -> list[CheckOutcome]:
    """Per series, some good backup was restore-tested (restored, started, data checked) within its own limit."""
    limit = config.restore_test_max_age.total_seconds()
    return series_freshness(records, now, limit=limit, stamp=restore_tested_at, words=RESTORE_TESTED)


def _same_repo(location: Any, url: str) -> bool:
    return isinstance(location, str) and location.rstrip("/") == redact(url).rstrip("/")


def check_repo_drills(repo_url: str, config: MonitorConfig, now: datetime) -> list[CheckOutcome]:
    """Drill freshness of this repository: only restore tests of its own backups count, never synthetic drills."""
    if config.drill_history is None:
        return []
    history = read_history(config.drill_history)
    mine = [r for r in history.records if r.get("family") != "fault-detection"
            and r.get("data_source") in ("team-backup", "team-database")
            and _same_repo((r.get("source") or {}).get("location"), repo_url)]  # fmt: skip
    synthetic = sum(1 for r in history.records if r.get("verdict") == "pass" and r.get("data_source", "synthetic")
                    == "synthetic")  # fmt: skip
    limit = config.drill_max_age.total_seconds()
    figures: dict[str, Any] = {"history": str(config.drill_history), "restore_tests": len(mine),
                               "synthetic_passes_ignored": synthetic, "limit_seconds": limit}  # fmt: skip
    if mine and mine[-1].get("verdict") in ("fail", "error"):
        last = mine[-1]
        text = (f"the newest restore test of this repository FAILED at {last.get('finished_at')} "
                f"({last.get('scenario')}/{last.get('method')}): {last.get('reason') or 'no reason recorded'}; "
                "fix it and run the restore test again")  # fmt: skip
        return [_fail("drills", "critical", text, **figures, last_failed=last.get("finished_at"))]
    passes = [r for r in mine if r.get("verdict") == "pass"]
    if not passes:
        ignored = f" ({synthetic} passing drill(s) on synthetic data do not count)" if synthetic else ""
        text = (f"no passing restore test of this repository's backups in {config.drill_history}{ignored}; run "
                f"`pytest drills/test_restore_test.py --source-repo {redact(repo_url)} --history-file "
                f"{config.drill_history}`")  # fmt: skip
        return [_fail("drills", "warning", text, **figures)]
    newest = passes[-1]
    age = (now - datetime.fromisoformat(str(newest["finished_at"]))).total_seconds()
    figures |= {"last_pass": newest["finished_at"], "age_seconds": age}
    if age > limit:
        text = (f"the last passing restore test of this repository was {_age(age)} ago (limit {_age(limit)}); "
                "schedule the restore-test drill")  # fmt: skip
        return [_fail("drills", "warning", text, **figures)]
    return [_ok("drills", f"restore test of this repository passed {_age(age)} ago", **figures)]


def check_buckets(repo: Repository, config: MonitorConfig, now: datetime) -> list[CheckOutcome]:
    """Per document-bucket backup name in the repository, the newest finished backup is younger than its limit."""
    from backup_tools.backup.files import BUCKETS, list_bucket_backups

    names = sorted({key.split("/")[1] for key in repo.list(f"{BUCKETS}/") if key.count("/") >= 2})
    out, limit = [], config.bucket_max_age.total_seconds()
    for name in names:
        manifests = list_bucket_backups(repo, name)
        check = f"freshness:bucket:{name}"
        if not manifests:
            out.append(_fail(check, "critical", f"no finished bucket backup of {name!r} (limit {_age(limit)}); "
                             "run `backup-tools storage backup` on a schedule", limit_seconds=limit))  # fmt: skip
            continue
        newest = max(manifests, key=lambda m: m.finished_at)
        age = (now - newest.finished_at).total_seconds()
        figures = {"newest": newest.id, "finished_at": newest.finished_at, "age_seconds": age, "limit_seconds": limit,
                   "documents": len(newest.entries)}  # fmt: skip
        if age > limit:
            text = (f"newest bucket backup {newest.id} of {name!r} finished {_age(age)} ago (limit {_age(limit)}); "
                    "is the bucket backup schedule running?")  # fmt: skip
            out.append(_fail(check, "critical", text, **figures))
        else:
            out.append(_ok(check, f"newest bucket backup {newest.id} of {name!r} finished {_age(age)} ago", **figures))
    return out


def check_capacity(repo: Repository, config: MonitorConfig) -> list[CheckOutcome]:
    """A file:// repository's filesystem, or an S3 repository against its configured quota, is not filling up."""
    warn, crit = config.capacity_warn_percent, config.capacity_critical_percent
    if repo.url.startswith("file://"):
        path = Path(repo.url.removeprefix("file://"))
        try:
            usage = shutil.disk_usage(path)
        except OSError as e:
            return [_fail("capacity", "critical", f"cannot read the free space of {path}: {e.strerror}")]
        # as df counts it: blocks reserved for root are neither used nor available to the backups
        used, total, where = usage.used, usage.used + usage.free, f"the filesystem holding {path}"
    elif config.s3_quota_bytes:
        try:
            used = sum(o.size for o in repo.list_with_etags(""))  # type: ignore[attr-defined]
        except (AttributeError, BackupToolsError) as e:
            return [_fail("capacity", "critical", f"cannot sum the repository's object sizes: {e}")]
        total, where = config.s3_quota_bytes, f"{repo.url} against its quota"
    else:
        return [_ok("capacity", "no quota configured for this S3 repository (set s3_quota to check its size)")]
    percent = 100.0 * used / total if total else 100.0
    figures = {"used_bytes": used, "total_bytes": total, "used_percent": round(percent, 2),
               "warn_percent": warn, "critical_percent": crit}  # fmt: skip
    text = f"{where}: {format_bytes(used)} of {format_bytes(total)} used ({percent:.0f}%)"
    if percent > crit:
        return [_fail("capacity", "critical", f"{text}, above {crit:g}%: prune or grow it before backups fail",
                      **figures)]  # fmt: skip
    if percent > warn:
        return [_fail("capacity", "warning", f"{text}, above {warn:g}%: plan pruning or more space", **figures)]
    return [_ok("capacity", text, **figures)]
