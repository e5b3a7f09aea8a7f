"""Data residency: the region(s) a repository lives in, recorded at creation, and an allowed-region list.

`residency.json` in the repository holds `regions` (an S3 bucket's location from GetBucketLocation; for a
file:// repository what the operator declares with PGDRILL_REGION, since a path has no region of its own),
written by the first run that finds it missing. `find_violation` compares the recorded and the live regions
with the allowed list (PGDRILL_ALLOWED_REGIONS or --allowed-regions): backup and copy refuse to write to a
repository outside it, `check` reports it as a critical check.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from backup_tools.errors import RepositoryError, ResidencyError
from backup_tools.repo.base import Repository

RESIDENCY_KEY = "residency.json"


def allowed_regions(option: str | None) -> tuple[str, ...]:
    """The allowed-region list from --allowed-regions, else PGDRILL_ALLOWED_REGIONS (comma-separated); () = any."""
    text = option if option is not None else os.environ.get("PGDRILL_ALLOWED_REGIONS", "")
    return tuple(r.strip() for r in text.split(",") if r.strip())


def live_regions(repo: Repository) -> tuple[str, ...]:
    """Where the repository's objects are: the S3 bucket's location, or PGDRILL_REGION for a file:// path."""
    s3 = None
    if repo.url.startswith("s3://"):  # boto3 is loaded only for S3 repositories (0.3 s of start-up otherwise)
        from backup_tools.repo.s3.repository import S3Repository

        s3 = repo if isinstance(repo, S3Repository) else None
    if s3 is not None:
        from backup_tools.repo.s3.io import BOTO

        try:
            where = s3._c.get_bucket_location(Bucket=s3.bucket).get("LocationConstraint")
        except BOTO as e:
            raise RepositoryError(f"could not read the region of bucket {s3.bucket}: {e}") from e
        return (where or "us-east-1",)  # S3 answers None for us-east-1
    declared = os.environ.get("PGDRILL_REGION", "")
    return tuple(r.strip() for r in declared.split(",") if r.strip())


def recorded_regions(repo: Repository, *, record: bool) -> tuple[str, ...]:
    """The regions in residency.json; with record=True a repository without one gets it now (its creation)."""
    if repo.exists(RESIDENCY_KEY):
        return tuple(json.loads(repo.get_bytes(RESIDENCY_KEY)).get("regions") or ())
    regions = live_regions(repo)
    if record and regions:  # a file:// path with no PGDRILL_REGION has nothing to record
        doc = {
            "regions": list(regions),
            "source": "bucket location" if repo.url.startswith("s3://") else "PGDRILL_REGION",
        }
        try:
            repo.put_bytes(RESIDENCY_KEY, (json.dumps(doc, indent=2) + "\n").encode())
        except RepositoryError as e:
            if "already exists" not in str(e):  # another first run recorded it meanwhile
                raise
    return regions


def find_violation(repo: Repository, allowed: Sequence[str], *, record: bool) -> str | None:
    """One line saying how the repository breaks residency, or None (always None when allowed is empty)."""
    problem = _violation(repo, allowed, recorded_regions(repo, record=False))
    if record and not problem:
        recorded_regions(repo, record=True)  # a repository outside the allowed regions gets nothing written
    return problem


def _violation(repo: Repository, allowed: Sequence[str], recorded: tuple[str, ...]) -> str | None:
    if not allowed:
        return None
    live = live_regions(repo)
    allow = ", ".join(allowed)
    if not live and not recorded:
        return f"{repo.url} has no known region (a file:// repository: set PGDRILL_REGION) and only {allow} are allowed"
    outside = [r for r in dict.fromkeys([*recorded, *live]) if r not in allowed]
    if outside:
        return f"{repo.url} is in {', '.join(outside)}, outside the allowed regions {allow}"
    if recorded and live and set(live) - set(recorded):
        return f"{repo.url} is now in {', '.join(live)} but recorded {', '.join(recorded)} at creation"
    return None


def guard(args: Any) -> None:
    """backup / copy: record the region of the repository written to, refuse one outside the allowed regions."""
    verb = getattr(args, "verb", None)
    if verb not in ("backup", "copy"):
        return
    from backup_tools.repo import open_repository

    allowed = allowed_regions(getattr(args, "allowed_regions", None))
    target = args.to_repo if verb == "copy" else args.repo
    urls = [args.repo, target] if verb == "copy" and allowed else [target]  # a copy reads the source: checked too
    for url in urls:
        problem = find_violation(open_repository(url), allowed, record=url == target)
        if problem:
            raise ResidencyError(f"residency: {problem}; nothing was written. Use a repository in an allowed region")
