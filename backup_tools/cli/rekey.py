"""The rekey verb: rotate the key that wraps a repository's data keys."""

from __future__ import annotations

import argparse
from typing import Any

from backup_tools.cli.common import add_repo, add_verb, log
from backup_tools.repo import open_repository


def cmd_rekey(args: argparse.Namespace) -> int:
    """Re-wrap every data key of the repository with the new key file or KMS key."""
    from backup_tools.lifecycle.rekey import rekey
    from backup_tools.security.keys import KmsKey, load_key_file

    new = KmsKey(args.new_kms_key_id) if args.new_kms_key_id else load_key_file(args.new_key_file)
    result = rekey(open_repository(args.repo), new=new, key_file=args.key_file, dry_run=args.dry_run, log=log)
    for key in result.changed:
        print(f"{'would re-wrap' if args.dry_run else 're-wrapped'} {key}")
    verb = "would re-wrap" if args.dry_run else "re-wrapped"
    print(f"{verb} {len(result.changed)} object(s) to key id {result.new_key_id}; "
          f"{len(result.already)} already wrapped by it, {len(result.plaintext)} unencrypted")  # fmt: skip
    return 0


def add_key_parsers(verbs: Any) -> None:
    """Add rekey."""
    r = add_verb(verbs, "rekey", cmd_rekey,
                 "re-wrap every backup's, WAL file's and bucket backup's data key with a new key (key rotation)")  # fmt: skip
    add_repo(r)
    r.add_argument(
        "--key-file", help="the current key file (default $PGDRILL_KEY_FILE; not needed for KMS-wrapped keys)"
    )
    new = r.add_mutually_exclusive_group(required=True)
    new.add_argument("--new-key-file", help="the new key file (create it with `backup-tools keygen > FILE`)")
    new.add_argument("--new-kms-key-id", help="the new AWS KMS key id, alias or ARN")
    r.add_argument(
        "--dry-run", action="store_true", help="list what would be re-wrapped (checks the old key), change nothing"
    )
