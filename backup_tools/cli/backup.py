"""The backup verb: logical (pg_dump), full or incremental (pg_basebackup) into a repository."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from backup_tools.cli.common import add_key, add_pgbin, add_repo, add_verb, log, pg_for
from backup_tools.errors import UsageError
from backup_tools.lifecycle.labels import LABEL
from backup_tools.monitor.audit import note
from backup_tools.repo import open_repository
from backup_tools.repo.s3.placement import STORAGE_CLASSES, placement_for

PHYSICAL_FORMATS, LOGICAL_FORMATS = ("tar", "plain"), ("custom", "directory", "plain")


def check_label(text: str) -> str:
    """An argparse type: a label is 1-40 lower-case letters, digits, '-' or '_'."""
    if not LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: use lower-case letters, digits, '-' or '_'")
    return text


def cmd_backup(args: argparse.Namespace) -> int:
    """Take a backup."""
    repo = open_repository(args.repo)
    repo = repo.placed(placement_for(repo, storage_class=args.storage_class, lock_days=args.lock_days))
    if args.kind == "logical":
        from backup_tools.backup.logical import DumpOptions, backup_logical

        fmt = args.format or "custom"
        if fmt not in LOGICAL_FORMATS:
            raise UsageError(f"--format {fmt} is for physical backups; --kind logical takes custom, directory or plain")
        compression = None if args.compress == "none" else args.compress
        options = DumpOptions(
            fmt=fmt, jobs=args.jobs, tables=tuple(args.table or ()), compression=compression, key_file=args.key_file,
            schema_only=args.schema_only, data_only=args.data_only, label=args.label,
        )  # fmt: skip
        record = backup_logical(args.dsn, repo, options, pg=pg_for(args), log=log)
    else:
        from backup_tools.backup.physical import physical_backup

        fmt = args.format or "tar"
        if fmt not in PHYSICAL_FORMATS or args.jobs != 1 or args.table or args.schema_only or args.data_only:
            raise UsageError(
                f"--kind {args.kind} takes --format tar or plain and no --jobs/--table/--schema-only/--data-only "
                "(those are for --kind logical)"
            )
        record = physical_backup(
            dsn=args.dsn, repo=repo, kind=args.kind, pg=pg_for(args), fmt=fmt, compression=args.compress,
            key_file=args.key_file, staging_dir=Path(args.staging_dir) if args.staging_dir else None, label=args.label,
            log=log,
        ).record  # fmt: skip
    note(backup_id=record.id, size=record.size)
    print(record.id)
    return 0


def add_backup_parser(verbs: Any) -> None:
    """Add backup."""
    b = add_verb(verbs, "backup", cmd_backup, "take a logical, full or incremental backup into a repository")
    b.add_argument("--dsn", required=True, help="libpq connection string (no password: use PGPASSFILE)")
    add_repo(b)
    b.add_argument("--kind", required=True, choices=("logical", "full", "incremental"))
    b.add_argument(
        "--format", choices=("tar", "plain", "custom", "directory"),
        help="full/incremental: pg_basebackup tar (default) or plain; logical: pg_dump custom (default), directory "
        "or plain",
    )  # fmt: skip
    b.add_argument("--jobs", type=int, default=1, help="logical only: parallel pg_dump jobs (needs --format directory)")
    b.add_argument("--table", action="append", metavar="NAME", help="logical only: dump this table (repeatable)")
    b.add_argument("--schema-only", action="store_true", help="logical only: the schema, no data (pg_dump -s)")
    b.add_argument("--data-only", action="store_true", help="logical only: the data, no schema (pg_dump -a)")
    b.add_argument("--label", type=check_label, metavar="LABEL",
                   help="purpose of the backup (daily, weekly, predeploy, ...): prune keeps it by [retention.labels]")  # fmt: skip
    b.add_argument("--compress", choices=("zstd", "gzip", "none"), default="zstd", help="default zstd")
    b.add_argument("--storage-class", choices=STORAGE_CLASSES,
                   help="S3 storage class of the backup's data objects (e.g. GLACIER for monthly archives)")  # fmt: skip
    b.add_argument("--lock-days", type=int, metavar="N",
                   help="S3 Object Lock (COMPLIANCE) every object of the backup for N days (bucket needs Object Lock)")  # fmt: skip
    b.add_argument("--staging-dir", help="where an unencrypted pg_basebackup stages before upload (default: inside "
                   "a file:// repo); an encrypted backup stages nothing")  # fmt: skip
    add_key(b)
    add_pgbin(b)
