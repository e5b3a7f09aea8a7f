"""The backup-tools command line: one verb per operation, exit codes 0 ok, 1 failed, 2 bad usage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from backup_tools import __version__
from backup_tools.errors import BackupToolsError, WalMissing
from backup_tools.evidence_cli import add_evidence_parser
from backup_tools.repository import open_repository
from backup_tools.runner import redact
from backup_tools.wal import WAL_FETCH_ABORT_EXIT, wal_fetch, wal_push

EPILOG = """\
examples:
  archive_command = 'backup-tools wal-push %p --repo file:///var/lib/pgbackup'
  restore_command = 'backup-tools wal-fetch %f %p --repo file:///var/lib/pgbackup'
"""


def cmd_wal_push(args: argparse.Namespace) -> int:
    """Archive one WAL file (archive_command)."""
    wal_push(Path(args.wal_path), repo=open_repository(args.repo))
    return 0


def cmd_wal_fetch(args: argparse.Namespace) -> int:
    """Restore one WAL file (restore_command): missing -> 1, any other failure -> stop recovery."""
    try:
        wal_fetch(args.wal_name, Path(args.dest), repo=open_repository(args.repo))
    except WalMissing:
        return 1  # normal at the end of the archive; PostgreSQL then ends recovery
    except BackupToolsError as e:
        print(f"backup-tools: error: {redact(str(e))}; stopping recovery", file=sys.stderr)
        return WAL_FETCH_ABORT_EXIT
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb."""
    parser = argparse.ArgumentParser(
        prog="backup-tools",
        description="Back up, archive WAL for, restore and verify PostgreSQL clusters.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"backup-tools {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    push = _verb(verbs, "wal-push", cmd_wal_push, "archive one WAL file; use as archive_command")
    push.add_argument("wal_path", metavar="WAL_PATH", help="the %%p path PostgreSQL passes")
    push.add_argument("--repo", required=True, help="repository URL (file:///path or s3://bucket/prefix)")
    fetch = _verb(verbs, "wal-fetch", cmd_wal_fetch, "restore one WAL file; use as restore_command")
    fetch.add_argument("wal_name", metavar="WAL_NAME", help="the %%f file name PostgreSQL asks for")
    fetch.add_argument("dest", metavar="DEST", help="the %%p path to write")
    fetch.add_argument("--repo", required=True, help="repository URL (file:///path or s3://bucket/prefix)")
    add_evidence_parser(verbs)
    return parser


def _verb(verbs, name: str, func: Callable[[argparse.Namespace], int], summary: str) -> argparse.ArgumentParser:
    sub = verbs.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
    sub.set_defaults(func=func)
    return sub


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; print one actionable line on failure and return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BackupToolsError as e:
        print(f"backup-tools {args.verb}: error: {redact(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"backup-tools {args.verb}: interrupted; nothing was marked as done", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
