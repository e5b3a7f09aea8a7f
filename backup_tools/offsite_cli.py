"""The `backup-tools copy` and `backup-tools storage` verbs: DR-region copies and file-bucket backups."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from backup_tools.repository import open_repository
from backup_tools.runner import redact


def _log(message: str) -> None:
    print(redact(message), file=sys.stderr, flush=True)


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


def cmd_copy(args: argparse.Namespace) -> int:
    """Copy backups and their WAL to another repository, verified there."""
    from backup_tools.copy import copy_backups

    src, dst = open_repository(args.repo), open_repository(args.to_repo)
    result = copy_backups(src, dst, backup=args.backup, all_wal=args.all_wal, log=_log)
    if args.json:
        _print_json(result.to_dict())
        return 0
    wal_lag = "-" if result.wal_lag_seconds is None else f"{result.wal_lag_seconds:.0f} s"
    print(f"copied {', '.join(result.backups) or 'no backups'} to {result.destination}: {result.copied} object(s) "
          f"copied, {result.skipped} already there, {result.repaired} repaired, {result.wal_copied} WAL file(s) "
          f"copied; newest WAL {result.newest_wal or '-'} (lag {wal_lag})")  # fmt: skip
    return 0


def add_copy_parser(verbs: argparse._SubParsersAction) -> None:
    """Add `copy` to the backup-tools parser."""
    c = verbs.add_parser(
        "copy", help="copy backups and their WAL to another repository (DR region, 3-2-1), verified there",
        description="Copy backups byte for byte (no key needed) and the WAL from their start through the newest; "
        "every object is read back at the destination; catalogs are written last; a rerun resumes.",
    )  # fmt: skip
    c.add_argument("--repo", required=True, help="source repository URL (file:///path or s3://bucket/prefix)")
    c.add_argument("--to-repo", required=True, help="destination repository URL")
    c.add_argument("--backup", default="latest", metavar="ID", help="backup id, 'latest' (default) or 'all'")
    c.add_argument("--all-wal", action="store_true", help="copy every archived WAL file, not only from the backups on")
    c.add_argument("--json", action="store_true", help="print the result (counts, copy lag) as JSON")
    c.set_defaults(func=cmd_copy)


def add_offsite_parsers(verbs: argparse._SubParsersAction) -> None:
    """Add `copy` and `storage` to the backup-tools parser."""
    add_copy_parser(verbs)
