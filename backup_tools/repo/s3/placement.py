"""Storage tiers and Object Lock for backups in S3: where objects go, archive restores, and what is locked.

`backup --storage-class C --lock-days N` (and `copy`) set a Placement on the S3 repository: the data objects
of each backup written meanwhile go to storage class C (the small catalog.json and backup_manifest stay
STANDARD, so list/prune/incrementals never wait for an archive restore), and every object of the backup,
catalog included, gets an S3 Object Lock COMPLIANCE retain-until date N days ahead. The catalog records
both (options storage_class, lock_until); later rewrites of a catalog (verify, rekey) keep its lock.
A restore first asks S3 to restore every archived object of the backup (request_restores) and stops with
RestorePending ("retry in N hours") instead of failing half-way; prune skips locked backups (locked_until).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from backup_tools.catalog import BACKUPS, BackupRecord
from backup_tools.errors import UsageError
from backup_tools.repo.base import Repository

logger = logging.getLogger(__name__)

STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "GLACIER", "DEEP_ARCHIVE")
ARCHIVED = ("GLACIER", "DEEP_ARCHIVE")
RESTORE_HOURS = {  # (storage class, retrieval tier) -> typical hours until readable (AWS documentation)
    ("GLACIER", "Expedited"): 1, ("GLACIER", "Standard"): 5, ("GLACIER", "Bulk"): 12,
    ("DEEP_ARCHIVE", "Standard"): 12, ("DEEP_ARCHIVE", "Bulk"): 48,
}  # fmt: skip
MAX_LOCK_DAYS = 36500
Log = Callable[[str], Any]


@dataclass(frozen=True)
class Placement:
    """Storage class of a backup's data objects and the Object Lock retain-until date of all its objects."""

    storage_class: str | None = None
    retain_until: datetime | None = None

    def options(self) -> dict[str, Any]:
        """The catalog options recording this placement."""
        out: dict[str, Any] = {}
        if self.storage_class:
            out["storage_class"] = self.storage_class
        if self.retain_until:
            out["lock_until"] = self.retain_until.isoformat()
        return out

    @property
    def archived(self) -> bool:
        """True when data objects go to a tier that must be restored before reading."""
        return self.storage_class in ARCHIVED


def _is_s3(repo: Repository) -> bool:
    if not repo.url.startswith("s3://"):  # boto3 loads only for S3 repositories (0.12 s of a restore's start-up)
        return False
    from backup_tools.repo.s3.repository import S3Repository

    return isinstance(repo, S3Repository)


def require_s3(repo: Repository, why: str) -> Any:
    """The repository itself when it is an s3:// one; a UsageError saying why it must be otherwise."""
    if not _is_s3(repo):
        raise UsageError(f"{why}; {repo.url} is not an s3:// repository")
    return repo


def placement_for(
    repo: Repository, *, storage_class: str | None = None, lock_days: int | None = None
) -> Placement | None:
    """Check --storage-class / --lock-days against the repository and return the Placement (None: neither given)."""
    if storage_class is None and lock_days is None:
        return None
    if not _is_s3(repo):
        raise UsageError(
            f"--storage-class and --lock-days need an s3:// repository; {repo.url} is not one "
            "(use filesystem snapshots or WORM storage for file:// repositories)"
        )
    if storage_class is not None and storage_class not in STORAGE_CLASSES:
        raise UsageError(f"--storage-class {storage_class} is unknown: use one of {', '.join(STORAGE_CLASSES)}")
    retain = None
    if lock_days is not None:
        if not 1 <= lock_days <= MAX_LOCK_DAYS:
            raise UsageError(f"--lock-days {lock_days} is invalid: give 1..{MAX_LOCK_DAYS} days")
        if not object_lock_enabled(repo):
            raise UsageError(
                f"bucket {repo.bucket} of {repo.url} has no Object Lock: create the backup bucket with Object Lock "  # type: ignore[attr-defined]
                "enabled (aws s3api create-bucket --object-lock-enabled-for-bucket) or drop --lock-days"
            )
        retain = datetime.now(UTC) + timedelta(days=lock_days)
    return Placement(storage_class, retain)


def object_lock_enabled(repo: Any) -> bool:
    """Whether the S3 repository's bucket has Object Lock enabled."""
    from backup_tools.repo.s3.io import BOTO, error_code

    try:
        conf = repo._c.get_object_lock_configuration(Bucket=repo.bucket)
    except BOTO as e:
        if "ObjectLockConfigurationNotFound" in error_code(e)[0]:
            return False
        raise repo._fail(e, "reading the bucket's Object Lock configuration") from e
    return conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


def _head(repo: Any, key: str) -> dict[str, Any]:
    from backup_tools.repo.s3.io import BOTO

    try:
        return repo._c.head_object(Bucket=repo.bucket, Key=repo._full(key))
    except BOTO as e:
        raise repo._fail(e, f"looking up {key}") from e


def object_keys(record: BackupRecord) -> list[str]:
    """The repository keys of a backup's data objects."""
    return [f"{BACKUPS}/{record.id}/{f.name}" for f in record.files]


def is_archived(repo: Repository, key: str) -> bool:
    """True when an S3 object sits in GLACIER / DEEP_ARCHIVE with no finished restore (it cannot be read now)."""
    if not _is_s3(repo):
        return False
    head = _head(repo, key)
    return head.get("StorageClass") in ARCHIVED and 'ongoing-request="false"' not in head.get("Restore", "")


def request_restores(repo: Repository, records: Iterable[BackupRecord], *, log: Log = logger.info) -> None:
    """Ask S3 to restore every archived object of the backups; raise RestorePending if any is not readable yet."""
    if not _is_s3(repo):
        return
    from backup_tools.errors import RestorePending
    from backup_tools.repo.s3.io import BOTO, error_code

    s3: Any = repo
    records = list(records)
    requested, running, classes = 0, 0, set()
    for key in (k for r in records for k in object_keys(r)):
        head = _head(s3, key)
        state = head.get("Restore", "")
        if head.get("StorageClass") not in ARCHIVED or 'ongoing-request="false"' in state:
            continue
        classes.add(head["StorageClass"])
        if 'ongoing-request="true"' in state:
            running += 1
            continue
        request = {"Days": s3.restore_days, "GlacierJobParameters": {"Tier": s3.restore_tier}}
        try:
            s3._c.restore_object(Bucket=s3.bucket, Key=s3._full(key), RestoreRequest=request)
            requested += 1
        except BOTO as e:
            if error_code(e)[0] != "RestoreAlreadyInProgress":
                raise s3._fail(e, f"requesting the restore of {key} from its archive tier") from e
            running += 1
    if not requested and not running:
        return
    hours = max(RESTORE_HOURS.get((c, s3.restore_tier), 12) for c in classes)
    ids = ", ".join(r.id for r in records)
    log(f"### {requested + running} archived object(s) of {ids}: {requested} restore(s) requested, {running} running")
    raise RestorePending(
        f"backup {ids} is in {'/'.join(sorted(classes))}: restore requested for all {requested + running} archived "
        f"object(s) ({requested} now, {running} already running, {s3.restore_tier} tier, readable for "
        f"{s3.restore_days} days); nothing was restored yet: retry in {hours} hours"
    )


def locked_until(repo: Repository, record: BackupRecord, *, now: datetime) -> datetime | None:
    """The Object Lock retain-until date still protecting a backup (catalog option, or its catalog object's)."""
    dates = []
    if until := record.options.get("lock_until"):
        dates.append(datetime.fromisoformat(until))
    if _is_s3(repo):
        from backup_tools.catalog import CATALOG_NAME

        head = _head(repo, f"{BACKUPS}/{record.id}/{CATALOG_NAME}")
        if head.get("ObjectLockRetainUntilDate"):
            dates.append(head["ObjectLockRetainUntilDate"])
    future = [d for d in dates if d > now]
    return max(future) if future else None
