"""The wal-push / wal-fetch verbs: PostgreSQL runs them once per WAL file, so this module imports little."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from backup_tools.cli.common import add_key, add_repo, add_verb, one_line
from backup_tools.errors import BackupToolsError, WalMissing
from backup_tools.repo import open_repository
from backup_tools.wal.archive import WAL_FETCH_ABORT_EXIT, wal_fetch, wal_push


def cmd_wal_push(args: argparse.Namespace) -> int:
    """Archive one WAL file (archive_command)."""
    wal_push(Path(args.wal_path), repo=open_repository(args.repo), compression=args.compress, key_file=args.key_file)
    return 0


def cmd_wal_fetch(args: argparse.Namespace) -> int:
    """Restore one WAL file (restore_command): missing -> 1, any other failure -> stop recovery."""
    try:
        wal_fetch(args.wal_name, Path(args.dest), repo=open_repository(args.repo), key_file=args.key_file)
    except WalMissing:
        return 1  # normal at the end of the archive; PostgreSQL then ends recovery
    except BackupToolsError as e:
        print(f"backup-tools wal-fetch: error: {one_line(e)}; stopping recovery", file=sys.stderr)
        return WAL_FETCH_ABORT_EXIT
    return 0


def add_wal_parsers(verbs: Any) -> None:
    """Add wal-push and wal-fetch."""
    push = add_verb(verbs, "wal-push", cmd_wal_push, "archive one WAL file; use as archive_command")
    push.add_argument("wal_path", metavar="WAL_PATH", help="the %%p path PostgreSQL passes")
    add_repo(push)
    push.add_argument("--compress", choices=("zstd", "gzip", "none"), default="zstd", help="default zstd")
    add_key(push)
    fetch = add_verb(verbs, "wal-fetch", cmd_wal_fetch, "restore one WAL file; use as restore_command")
    fetch.add_argument("wal_name", metavar="WAL_NAME", help="the %%f file name PostgreSQL asks for")
    fetch.add_argument("dest", metavar="DEST", help="the %%p path to write")
    add_repo(fetch)
    add_key(fetch)
