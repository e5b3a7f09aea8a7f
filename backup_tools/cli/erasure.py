"""The erasure verbs (record, replay) and the replay a restore runs before it counts as ready."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backup_tools.cli.common import log
from backup_tools.errors import UsageError


def cmd_erasure_record(args: argparse.Namespace) -> int:
    """Append an erasure request (the subject as a keyed hash) to the ledger."""
    from backup_tools.restore.erasure import load_erasure_config, record

    entry = record(args.ledger, load_erasure_config(Path(args.config)), args.subject)
    print(
        f"recorded erasure request {entry['id']} at {entry['requested_at']} (subject hmac {entry['subject_hmac'][:12]}…)"
    )
    return 0


def cmd_erasure_replay(args: argparse.Namespace) -> int:
    """Re-apply every erasure request of the ledger to a database (idempotent)."""
    from backup_tools.restore.erasure import load_erasure_config, replay

    result = replay(args.ledger, load_erasure_config(Path(args.config)), args.dsn, bucket=args.bucket, log=log)
    print(json.dumps({"requests": result.requests, "removed": result.removed}))
    return 0


def prepare_replay(args: argparse.Namespace) -> Callable[[str], None] | None:
    """For restore --erasure-ledger: read config and ledger now (an unreachable ledger fails before anything is
    restored) and return what replays it into the restored database."""
    if not getattr(args, "erasure_ledger", None):
        return None
    if not args.erasure_config:
        raise UsageError("--erasure-ledger needs --erasure-config FILE (the key and the tables of a subject)")
    from backup_tools.restore.erasure import load_erasure_config, read_ledger, replay

    config = load_erasure_config(Path(args.erasure_config))
    read_ledger(args.erasure_ledger)

    def run(dsn: str) -> None:
        result = replay(args.erasure_ledger, config, dsn, bucket=args.erasure_bucket, log=log)
        log(f"### Erasure replay of {result.requests} request(s) done before ready: removed {result.removed}")

    return run


def add_erasure_parser(verbs: Any) -> None:
    """Add erasure record / erasure replay."""
    erasure = verbs.add_parser("erasure", help="record GDPR erasure requests and replay them after a restore",
                               description="An erasure ledger outside the backups, replayed after restores.")  # fmt: skip
    sub = erasure.add_subparsers(dest="erasure_verb", metavar="VERB", required=True)
    r = sub.add_parser("record", help="append an erasure request (subject stored as a keyed hash)")
    r.add_argument("--ledger", required=True, help="ledger URL (file:///dir or s3://bucket/prefix), not the backups'")
    r.add_argument("--config", required=True, help="TOML with [erasure] key_file and [[erasure.targets]]")
    r.add_argument("--subject", required=True, help="the subject's identifier (as in the target columns)")
    r.set_defaults(func=cmd_erasure_record)
    p = sub.add_parser("replay", help="delete every erased subject's rows from a (restored) database")
    p.add_argument("--ledger", required=True, help="ledger URL")
    p.add_argument("--config", required=True, help="TOML with [erasure] key_file and [[erasure.targets]]")
    p.add_argument("--dsn", required=True, help="the database to clean (no password: use PGPASSFILE)")
    p.add_argument("--bucket", help="document bucket (s3://bucket/prefix or a directory) for bucket_key_column targets")
    p.set_defaults(func=cmd_erasure_replay)
