"""The audit verb: verify the repository's hash-chained audit trail, or show its lines."""

from __future__ import annotations

import argparse
import json
from typing import Any

from backup_tools.cli.common import add_repo


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Check the chain (and, with --audit-dsn, the backup_audit table's copy of each line's hash)."""
    from backup_tools.monitor.audit import verify
    from backup_tools.repo import open_repository

    repo = open_repository(args.repo)
    result = verify(repo, dsn=args.audit_dsn)
    for problem in result.problems:
        print(f"TAMPERED {problem}")
    if result.problems:
        print(f"audit trail of {repo.url}: {len(result.problems)} problem(s) in {result.lines} line(s); "
              "compare with the backup_audit table or another copy and find who changed the repository")  # fmt: skip
        return 1
    print(f"audit trail of {repo.url}: {result.lines} line(s), chain intact")
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    """Print the audit lines (JSON Lines, oldest first)."""
    from backup_tools.monitor.audit import AUDIT
    from backup_tools.repo import open_repository

    repo = open_repository(args.repo)
    for key in repo.list(f"{AUDIT}/"):
        line = json.loads(repo.get_bytes(key))
        print(json.dumps(line) if args.json else
              f"{line['time']} {line['os_user']}@{line['host']} {line['outcome']:6} {line['duration_s']:8.1f}s "
              f"{line['command']}" + (f" -> {line['error']}" if line.get("error") else ""))  # fmt: skip
    return 0


def add_audit_parser(verbs: Any) -> None:
    """Add audit verify / audit show."""
    audit = verbs.add_parser("audit", help="verify or show the repository's audit trail",
                             description="The audit trail: one hash-chained line per backup-tools run.")  # fmt: skip
    sub = audit.add_subparsers(dest="audit_verb", metavar="VERB", required=True)
    v = sub.add_parser("verify", help="detect removed or edited audit lines (exit 1 if any)")
    add_repo(v)
    v.add_argument("--audit-dsn", help="also compare each line's hash with the backup_audit table there")
    v.set_defaults(func=cmd_audit_verify)
    s = sub.add_parser("show", help="print the audit lines, oldest first")
    add_repo(s)
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=cmd_audit_show)
