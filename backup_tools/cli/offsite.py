"""The `backup-tools copy` and `backup-tools storage` verbs: DR-region copies and file-bucket backups."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from backup_tools.errors import UsageError
from backup_tools.pg.run import redact
from backup_tools.repo import open_repository


def _log(message: str) -> None:
    print(redact(message), file=sys.stderr, flush=True)


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


def cmd_copy(args: argparse.Namespace) -> int:
    """Copy backups and their WAL to another repository, verified there."""
    from backup_tools.lifecycle.offsite import copy_backups
    from backup_tools.repo.s3.placement import placement_for

    src, dst = open_repository(args.repo), open_repository(args.to_repo)
    placement = placement_for(dst, storage_class=args.storage_class, lock_days=args.lock_days)
    result = copy_backups(src, dst, backup=args.backup, all_wal=args.all_wal, placement=placement, log=_log)
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
    from backup_tools.cli.common import add_allowed_regions
    c = verbs.add_parser(
        "copy", help="copy backups and their WAL to another repository (DR region, 3-2-1), verified there",
        description="Copy backups byte for byte (no key needed) and the WAL from their start through the newest; "
        "every object is read back at the destination; catalogs are written last; a rerun resumes.",
    )  # fmt: skip
    c.add_argument("--repo", required=True, help="source repository URL (file:///path or s3://bucket/prefix)")
    c.add_argument("--to-repo", required=True, help="destination repository URL")
    add_allowed_regions(c)
    c.add_argument("--backup", default="latest", metavar="ID", help="backup id, 'latest' (default) or 'all'")
    c.add_argument("--all-wal", action="store_true", help="copy every archived WAL file, not only from the backups on")
    c.add_argument("--json", action="store_true", help="print the result (counts, copy lag) as JSON")
    c.add_argument("--storage-class", choices=("STANDARD", "STANDARD_IA", "GLACIER", "DEEP_ARCHIVE"),
                   help="S3 storage class of the copied backups' data objects (e.g. GLACIER in the DR bucket)")  # fmt: skip
    c.add_argument("--lock-days", type=int, metavar="N",
                   help="S3 Object Lock (COMPLIANCE) the copied backups' objects for N days at the destination")  # fmt: skip
    c.set_defaults(func=cmd_copy)


def _default_name(source: str) -> str:
    parsed = urlparse(source)
    tail = [p for p in (parsed.netloc + "/" + parsed.path).split("/") if p and p != "."]
    return "-".join(tail[-2:]) if parsed.scheme == "s3" else (tail[-1] if tail else "documents")


def cmd_storage(args: argparse.Namespace) -> int:
    """Back up, restore, verify, list or check document buckets."""
    from backup_tools.backup import files as storage
    from backup_tools.repo.buckets import open_bucket

    if args.action == "check":
        return _storage_check(args)
    repo = open_repository(args.repo)
    if args.action == "backup":
        name = args.name or _default_name(args.source)
        res = storage.backup_bucket(open_bucket(args.source), repo, name=name, codec=args.compress,
                                    key_file=args.key_file, log=_log)  # fmt: skip
        print(f"{res.manifest.id} ({name}): {res.copied} stored, {res.reused} unchanged, {res.vanished} vanished")
    elif args.action == "restore":
        res = storage.restore_bucket(repo, open_bucket(args.to), name=args.name, backup=args.backup,
                                     key_file=args.key_file, everything=args.all, log=_log)  # fmt: skip
        print(f"{res.backup_id}: {res.restored} restored, {res.unchanged} already identical")
    elif args.action == "verify":
        res = storage.verify_bucket_backup(repo, name=args.name, backup=args.backup, key_file=args.key_file, log=_log)
        for problem in res.problems:
            print(problem)
        print(f"{'OK' if res.ok else 'FAILED'} {res.backup_id}: {res.checked} documents checked"
              + ("" if res.plaintext_checked else " (stored checksums only: no key)"))  # fmt: skip
        return 0 if res.ok else 1
    else:
        for m in storage.list_bucket_backups(repo, args.name):
            print(f"{m.id:36} {m.finished_at.isoformat(timespec='seconds'):25} {len(m.entries):8d} {m.source}")
    return 0


def _storage_check(args: argparse.Namespace) -> int:
    from backup_tools.backup import files as storage
    from backup_tools.pg.conn import connect
    from backup_tools.repo.buckets import open_bucket

    if args.source:
        keys, where = [o.key for o in open_bucket(args.source).list_objects()], args.source
    elif args.repo and args.name:
        try:
            at = datetime.fromisoformat(args.at) if args.at else None
        except ValueError as e:
            raise UsageError(
                f"invalid --at {args.at!r}: use ISO 8601 with a zone, e.g. 2026-11-22T10:00:00+00:00"
            ) from e
        manifest = storage.read_bucket_backup(open_repository(args.repo), args.name, args.backup, at=at)
        keys, where = [e.key for e in manifest.entries], f"bucket backup {manifest.id}"
    else:
        raise UsageError("storage check needs --source BUCKET, or --repo and --name of a bucket backup")
    with connect(args.dsn, purpose="check documents against the bucket") as conn:
        res = storage.check_consistency(conn, keys, table=args.table, column=args.column, limit=args.limit)
    if args.json:
        _print_json(asdict(res) | {"ok": res.ok})
    else:
        print(f"{'OK' if res.ok else 'ORPHANS'}: {res.rows} rows, {res.objects} objects in {where}; "
              f"{res.missing_objects} rows without an object, {res.orphan_objects} objects without a row")  # fmt: skip
        print("".join(f"  no object: {k}\n" for k in res.first_missing) + "".join(
              f"  no row:    {k}\n" for k in res.first_orphans), end="")  # fmt: skip
    return 0 if res.ok else 1


def add_storage_parser(verbs: argparse._SubParsersAction) -> None:
    """Add `storage backup|restore|verify|list|check` to the backup-tools parser."""
    st = verbs.add_parser("storage", help="back up, restore and verify document buckets; check them against the DB",
                          description="File-bucket backups (S3 bucket or directory) with a manifest, incremental.")  # fmt: skip
    sub = st.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("backup", help="back up a bucket or directory (unchanged documents are not copied again)")
    b.add_argument("--source", required=True, help="s3://bucket/prefix, file:///dir or a directory")
    b.add_argument("--compress", choices=("zstd", "gzip", "none"), default="zstd", help="default zstd")
    r = sub.add_parser("restore", help="restore documents into a bucket or directory (verified)")
    r.add_argument("--to", required=True, help="s3://bucket/prefix, file:///dir or a directory")
    r.add_argument("--all", action="store_true", help="rewrite identical documents too")
    v = sub.add_parser("verify", help="check every document of a bucket backup against its sha256 (exit 1 if not)")
    ls = sub.add_parser("list", help="list the bucket backups of a name")
    c = sub.add_parser("check", help="documents.storage_key rows vs objects: orphans both ways (exit 1 if any)")
    c.add_argument("--dsn", required=True, help="the database (restored to the recovery point) to compare")
    c.add_argument("--source", help="compare with a live bucket or directory instead of a bucket backup")
    c.add_argument("--at", help="use the newest bucket backup finished by this ISO time (the recovery point)")
    c.add_argument("--table", default="documents")
    c.add_argument("--column", default="storage_key")
    c.add_argument("--limit", type=int, default=20, help="orphan keys to print each way (default 20)")
    c.add_argument("--json", action="store_true")
    for p in (b, r, v, ls, c):
        p.add_argument("--repo", required=p is not c, help="repository URL (file:///path or s3://bucket/prefix)")
        p.add_argument("--name", required=p not in (b, c), help="bucket backup name (default: from --source)")
        if p in (r, v, c):
            p.add_argument("--backup", default="latest", metavar="ID", help="bucket backup id or 'latest'")
        if p in (b, r, v):
            p.add_argument("--key-file", help="encryption key file (default $PGDRILL_KEY_FILE)")
        p.set_defaults(func=cmd_storage)


def add_offsite_parsers(verbs: argparse._SubParsersAction) -> None:
    """Add `copy` and `storage` to the backup-tools parser."""
    add_copy_parser(verbs)
    add_storage_parser(verbs)
