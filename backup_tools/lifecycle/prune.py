"""Prune a repository by a retention plan, resumably: mark catalogs, delete data, catalogs last, then WAL."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backup_tools.catalog import BACKUPS, CATALOG_NAME, WAL
from backup_tools.lifecycle.retention import DELETING, RetentionPlan, RetentionPolicy, plan_retention
from backup_tools.repo.base import Repository
from backup_tools.repo.s3.placement import locked_until

logger = logging.getLogger(__name__)
Log = Callable[[str], Any]  # where progress lines go: the CLI passes its stderr writer, else logging


@dataclass(frozen=True)
class PruneResult:
    """What prune did (or, in a dry run, would do)."""

    plan: RetentionPlan
    dry_run: bool
    deleted: tuple[str, ...] = ()
    deleted_wal: tuple[str, ...] = ()
    resumed: tuple[str, ...] = ()
    locked: dict[str, datetime] = field(default_factory=dict)  # outside retention, but under Object Lock until


def prune(
    repo: Repository,
    policy: RetentionPolicy,
    *,
    now: datetime,
    dry_run: bool,
    tz: str = "UTC",
    wal_segment_size: int | None = None,
    log: Log = logger.info,
) -> PruneResult:
    """Apply a retention plan under the repository lock: mark catalogs, delete data, catalogs last, then WAL."""
    repo.list(f"{BACKUPS}/")  # a mistyped repository fails here, before lock() would create it
    if dry_run:
        plan, locked = _plan_repo(repo, policy, now=now, tz=tz, wal_segment_size=wal_segment_size)
        log(f"### Prune of {repo.url} (dry run: nothing is deleted)\n{plan.render()}")
        _say_locked(locked, log)
        return PruneResult(plan, True, locked=locked)
    with repo.lock():
        plan, locked = _plan_repo(repo, policy, now=now, tz=tz, wal_segment_size=wal_segment_size)
        log(f"### Pruning {repo.url}\n{plan.render()}")
        _say_locked(locked, log)
        doomed = [d for d in plan.decisions if not d.keep]
        resumed = tuple(d.record.id for d in doomed if d.record.options.get(DELETING))
        for d in doomed:  # first make every deletion durable, and not good for any reader, so a rerun finishes it
            if not d.record.options.get(DELETING):
                note = f"being deleted by prune; if this stays, rerun `backup-tools prune --repo {repo.url}`"
                options = {"error": note, **d.record.options, DELETING: True, "deleting_at": now.isoformat()}
                repo.write_catalog(d.record.with_changes(status="FAILED", options=options))
        for d in doomed:  # newest first: an incremental goes before its parent
            r = d.record
            log(f"### Deleting backup {r.id}: {d.reason}")
            catalog = f"{BACKUPS}/{r.id}/{CATALOG_NAME}"
            for key in repo.list(f"{BACKUPS}/{r.id}/"):
                if key != catalog:
                    repo.delete(key)
            repo.delete(catalog)
            _remove_staging(repo, r.id, log)
        if plan.wal_delete:
            log(f"### Deleting {len(plan.wal_delete)} WAL file(s), oldest first")
        for key in plan.wal_delete:
            repo.delete(key)
        log(f"### Pruned {repo.url}: {len(doomed)} backup(s), {len(plan.wal_delete)} WAL file(s) deleted")
        return PruneResult(plan, False, tuple(d.record.id for d in doomed), plan.wal_delete, resumed, locked)


def _plan_repo(
    repo: Repository, policy: RetentionPolicy, *, now: datetime, tz: str, wal_segment_size: int | None
) -> tuple[RetentionPlan, dict[str, datetime]]:
    """The plan, with backups still under Object Lock kept (with their parents and WAL) instead of half-deleted."""
    records, wal = repo.list_backups(), repo.list(f"{WAL}/")
    plan = plan_retention(records, policy, now=now, tz=tz, wal=wal, wal_segment_size=wal_segment_size)
    locked = {}
    for d in plan.decisions:
        if not d.keep and not d.record.options.get(DELETING) and (until := locked_until(repo, d.record, now=now)):
            locked[d.record.id] = until
    if locked:
        plan = plan_retention(records, policy, now=now, tz=tz, wal=wal, wal_segment_size=wal_segment_size,
                              locked=locked)  # fmt: skip
    return plan, locked


def _say_locked(locked: dict[str, datetime], log: Log) -> None:
    for backup_id, until in sorted(locked.items()):
        log(
            f"### Backup {backup_id} is outside retention but under S3 Object Lock until "
            f"{until.astimezone(UTC).isoformat(timespec='minutes')}: skipped (nothing of it deleted); "
            "a prune after that date deletes it"
        )


def _remove_staging(repo: Repository, backup_id: str, log: Log) -> None:
    """Remove staging/<id>-* a killed backup left in a file:// repository (the next backup would too)."""
    staging = repo.local_path("staging")
    if staging is None:
        return
    for stale in staging.glob(f"{backup_id}*"):
        log(f"### Removing {stale}, left by a backup that was killed")
        shutil.rmtree(stale, ignore_errors=True)
