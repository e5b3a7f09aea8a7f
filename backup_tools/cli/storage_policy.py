"""The storage-policy verb: write or check the S3 lifecycle rules and tier tags of a repository."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_tools.cli.common import add_repo, add_verb


def cmd_storage_policy(args: argparse.Namespace) -> int:
    """Apply or check the lifecycle rules and tier tags of an S3 repository."""
    from backup_tools.config import load_pgdrill_section
    from backup_tools.lifecycle.retention import RetentionPolicy
    from backup_tools.lifecycle.tiers import parse_tiers, storage_policy
    from backup_tools.repo import open_repository
    from backup_tools.repo.s3.placement import require_s3

    repo = require_s3(open_repository(args.repo), "storage-policy sets S3 lifecycle rules")
    config = load_pgdrill_section(Path(args.config), "retention", what="retention config") or {}
    tiers = parse_tiers(config.get("tiers"))
    report = storage_policy(repo, tiers, RetentionPolicy.from_config(config), now=datetime.now(UTC), apply=args.apply)
    for line in report.ok:
        print(f"OK {line}")
    for line in report.drift:
        print(f"{'FIXED' if args.apply else 'DRIFT'} {line}")
    if report.drift and not args.apply:
        print(f"storage-policy: {len(report.drift)} difference(s) from {args.config}; "
              f"run `backup-tools storage-policy --repo {repo.url} --config {args.config} --apply`")  # fmt: skip
        return 1
    return 0


def add_storage_policy_parser(verbs: Any) -> None:
    """Add storage-policy."""
    sp = add_verb(verbs, "storage-policy", cmd_storage_policy,
                  "write or check S3 lifecycle rules: monthly backups to GLACIER, yearly to DEEP_ARCHIVE")  # fmt: skip
    add_repo(sp)
    sp.add_argument("--config", required=True, help="TOML with [retention] (GFS) and [retention.tiers]")
    mode = sp.add_mutually_exclusive_group(required=True)
    mode.add_argument("--apply", action="store_true", help="write the rules and tag the monthly/yearly backups")
    mode.add_argument("--check", action="store_true", help="report drift (exit 1), change nothing")
