"""The restore and restore-table verbs: a data directory (physical), a database or one table (logical)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from backup_tools.cli.common import add_key, add_pgbin, add_repo, add_verb, log, pg_for
from backup_tools.errors import BackupNotFound, UsageError
from backup_tools.repo import open_repository
from backup_tools.repo.base import Repository
from backup_tools.restore.pitr import RecoveryTarget


def parse_time(text: str) -> datetime:
    """An ISO 8601 --target-time."""
    try:
        return datetime.fromisoformat(text)
    except ValueError as e:
        raise UsageError(
            f"invalid --target-time {text!r}: use ISO 8601 with a zone, e.g. 2026-11-22T10:00:00+00:00"
        ) from e


def target_from(args: argparse.Namespace) -> RecoveryTarget | None:
    """The recovery target the options ask for (None: the end of the archived WAL)."""
    given = {k: getattr(args, f"target_{k}") for k in ("time", "lsn", "xid", "name")}
    given = {k: v for k, v in given.items() if v is not None}
    if not given and not args.target_immediate:
        return None
    if "time" in given:
        given["time"] = parse_time(given["time"])
    return RecoveryTarget(
        **given, immediate=args.target_immediate, inclusive=not args.exclusive, action=args.target_action,
        timeline=args.target_timeline,
    )  # fmt: skip


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a backup into a directory (physical) or a database (logical)."""
    from backup_tools.cli.erasure import prepare_replay

    erase = prepare_replay(args)  # an unreachable erasure ledger fails here, before anything is restored
    repo = open_repository(args.repo)
    target = target_from(args)
    if args.dsn:
        return _restore_logical(args, repo, target, erase)
    if erase and not (args.start and args.erasure_dbname):
        raise UsageError(
            "a physical restore replays erasures into the started server: add --start and --erasure-dbname"
        )
    if args.table or args.jobs != 1:
        raise UsageError(
            "--table and --jobs apply to logical restores (--dsn); a physical restore (--to) takes neither"
        )
    from backup_tools.restore.physical import RestoreOptions, restore, start_restored

    pg = pg_for(args)
    options = RestoreOptions(backup_id=args.backup, target=target, force=args.force, key_file=args.key_file,
                             archive=args.keep_archiving)  # fmt: skip
    result = restore(repo, to=Path(args.to), pg=pg, options=options, log=log)
    if args.start:
        if args.port is None or args.socket_dir is None:
            raise UsageError("--start needs --port and --socket-dir for the restored server")
        from backup_tools.wal.prefetch import WalFollower

        follower = WalFollower(repo, result.follow, result.data_dir) if result.follow else None
        started = start_restored(result.data_dir, pg=pg, port=args.port, socket_dir=Path(args.socket_dir),
                                 target=target, follower=follower, log=log)  # fmt: skip
        log(f"### Restored server {started.outcome} after {started.seconds:.1f} s; log: {started.logfile}")
        if erase:
            erase(f"host={args.socket_dir} port={args.port} dbname={args.erasure_dbname} user={args.erasure_user}")
    print(result.backup_id)
    return 0


def _restore_logical(args: argparse.Namespace, repo: Repository, target: RecoveryTarget | None, erase: Any) -> int:
    from backup_tools.restore.logical import LogicalRestoreOptions, find_logical_backup, restore_logical

    if args.backup == "latest" and target is not None and target.time is not None:
        records = [r for r in repo.list_backups() if r.kind == "logical" and r.is_good]
        fitting = [r for r in records if r.stop_time and r.stop_time <= target.time]
        if not fitting:
            raise BackupNotFound(f"no logical backup finished before {target.time.isoformat()}; choose a later time")
        chosen = fitting[-1]
    else:  # by id (a DONE logical one) or the newest
        chosen = find_logical_backup(repo, args.backup)
    from backup_tools.repo.s3.placement import request_restores

    request_restores(repo, [chosen], log=log)
    options = LogicalRestoreOptions(tables=tuple(args.table or ()), jobs=args.jobs, key_file=args.key_file,
                                    no_owner=args.no_owner, create_roles=args.create_roles)  # fmt: skip
    restore_logical(repo, chosen.id, args.dsn, options, pg=pg_for(args), log=log)
    if erase:
        erase(args.dsn)
    print(chosen.id)
    return 0


def cmd_restore_table(args: argparse.Namespace) -> int:
    """Restore one table from a logical backup, after a safety copy (or into a side table)."""
    from backup_tools.restore.table import restore_table

    result = restore_table(
        open_repository(args.repo), args.backup, args.dsn, args.table, into=args.into,
        safety_copy=not args.no_safety_copy, key_file=args.key_file, pg=pg_for(args), log=log,
    )  # fmt: skip
    saved = f"; safety copy {result.safety_copy}" if result.safety_copy else ""
    if args.json:
        print(json.dumps(asdict(result) | {"ok": result.ok}, indent=2, sort_keys=True))
    else:
        print(f"restored {result.rows} row(s) of {result.table} from {result.backup_id} into {result.target}{saved}")
    if not result.ok:
        log(f"backup-tools restore-table: {result.target} differs from the backup: {'; '.join(result.differences)}")
        return 1
    return 0


def add_restore_parsers(verbs: Any) -> None:
    """Add restore and restore-table."""
    r = add_verb(verbs, "restore", cmd_restore, "restore a backup into a new data directory or a database")
    add_repo(r)
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="DIR", help="data directory to create (physical backups)")
    where.add_argument("--dsn", help="database to restore a logical backup into")
    r.add_argument(
        "--backup", default="latest", metavar="ID", help="backup id or 'latest' (default: chosen for the target)"
    )
    goal = r.add_mutually_exclusive_group()
    goal.add_argument("--target-time", metavar="T", help="ISO 8601 time with zone")
    goal.add_argument("--target-lsn", metavar="L")
    goal.add_argument("--target-xid", metavar="X")
    goal.add_argument("--target-name", metavar="N", help="a restore point made with pg_create_restore_point")
    goal.add_argument("--target-immediate", action="store_true", help="stop as soon as the backup is consistent")
    r.add_argument("--exclusive", action="store_true", help="stop just before the target instead of after it")
    r.add_argument("--target-action", choices=("promote", "pause", "shutdown"), default="promote")
    r.add_argument("--target-timeline", default="latest")
    r.add_argument(
        "--force", action="store_true", help="replace a non-empty directory (stopping a server running in it)"
    )
    r.add_argument("--keep-archiving", action="store_true", help="leave archive_mode as in the backup (default: off)")
    r.add_argument(
        "--start", action="store_true",
        help="start the restored server and wait until it reached the target, fetching archived WAL ahead of recovery",
    )
    r.add_argument("--port", type=int, help="port for --start")
    r.add_argument("--socket-dir", help="unix socket directory for --start")
    r.add_argument("--jobs", type=int, default=1, help="logical only: parallel pg_restore jobs")
    r.add_argument(
        "--no-owner", action="store_true", help="logical only: objects owned by the restoring role, no GRANTs"
    )
    r.add_argument("--create-roles", action="store_true",
                   help="logical only: create the roles the dump names that the target lacks, as NOLOGIN")  # fmt: skip
    r.add_argument(
        "--table", action="append", metavar="NAME", help="logical only: restore only this table (repeatable)"
    )
    r.add_argument(
        "--erasure-ledger", metavar="URL", help="replay this GDPR erasure ledger before the restore is ready"
    )
    r.add_argument("--erasure-config", metavar="FILE", help="[erasure] key_file and targets for --erasure-ledger")
    r.add_argument("--erasure-bucket", metavar="URL", help="the document bucket whose erased subjects' objects go too")
    r.add_argument("--erasure-dbname", metavar="DB", help="physical --start: the database to replay erasures in")
    r.add_argument("--erasure-user", default="postgres", metavar="ROLE", help="physical --start: role for the replay")
    add_key(r)
    add_pgbin(r)
    t = add_verb(verbs, "restore-table", cmd_restore_table,
                 "restore one table's rows from a logical backup, keeping a safety copy of the current rows")  # fmt: skip
    add_repo(t)
    t.add_argument("--dsn", required=True, help="database holding the table (no password: use PGPASSFILE)")
    t.add_argument("--table", required=True, metavar="NAME", help="table to restore (schema as recorded in the backup)")
    t.add_argument("--backup", default="latest", metavar="ID", help="logical backup id or 'latest' (default)")
    t.add_argument("--into", metavar="SIDE_TABLE", help="load into this new table instead, to compare by hand")
    t.add_argument("--no-safety-copy", action="store_true", help="do not copy the current rows aside first")
    t.add_argument("--json", action="store_true", help="print the result (rows, safety copy, differences) as JSON")
    add_key(t)
    add_pgbin(t)
