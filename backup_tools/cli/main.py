"""The backup-tools command line: parser and main; each verb group lives in its own module of backup_tools/cli/.

Exit codes 0 ok, 1 failed, 2 bad usage, 3 encryption key. wal-push / wal-fetch take a fast path that
builds a parser with only those two verbs (PostgreSQL starts one process per WAL file).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from backup_tools import __version__
from backup_tools.cli.common import EPILOG, one_line
from backup_tools.errors import BackupToolsError

WAL_VERBS = ("wal-push", "wal-fetch")


def build_wal_parser() -> argparse.ArgumentParser:
    """A parser with only wal-push and wal-fetch: PostgreSQL runs them per WAL file, so they must start fast."""
    from backup_tools.cli.wal import add_wal_parsers

    parser = argparse.ArgumentParser(prog="backup-tools")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    add_wal_parsers(verbs)
    return parser


_GROUPS = {  # verb -> (module, function adding its group); main() builds only the group it runs
    **dict.fromkeys(("wal-push", "wal-fetch", "wal-stream"), ("cli.wal", "add_wal_parsers")),
    "backup": ("cli.backup", "add_backup_parser"),
    "list": ("cli.repo", "add_list_parser"),
    **dict.fromkeys(("restore", "restore-table"), ("cli.restore", "add_restore_parsers")),
    **dict.fromkeys(("verify", "check", "prune", "keygen"), ("cli.repo", "add_repo_parsers")),
    "evidence": ("cli.evidence", "add_evidence_parser"),
    **dict.fromkeys(("copy", "storage"), ("cli.offsite", "add_offsite_parsers")),
    "rekey": ("cli.rekey", "add_key_parsers"),
    "audit": ("cli.audit", "add_audit_parser"),
    "storage-policy": ("cli.storage_policy", "add_storage_policy_parser"),
    "cloud-check": ("cli.cloud_check", "add_cloud_check_parser"),
    "erasure": ("cli.erasure", "add_erasure_parser"),
}
# --help lists the groups in this order
_ORDER = ("backup", "wal-push", "list", "restore", "verify", "evidence", "copy", "rekey", "audit", "storage-policy",
          "cloud-check", "erasure")  # fmt: skip


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every verb (or only the group of verb `only`: other groups' imports cost start-up time)."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="backup-tools", description="Back up, archive WAL for, restore and verify PostgreSQL clusters.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"backup-tools {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in [only] if only in _GROUPS else _ORDER:
        module, adder = _GROUPS[verb]  # type: ignore[index]
        getattr(importlib.import_module(f"backup_tools.{module}"), adder)(verbs)
    return parser


def warn_password_on_argv(verb: str, dsn: str) -> None:
    """Warn (never echoing it) when --dsn carries a password: argv is readable by every local user."""
    from backup_tools.pg.conninfo import ConnInfo

    try:
        password = ConnInfo.parse(dsn).password
    except BackupToolsError:
        return  # the verb reports the malformed connection string itself
    if password:
        print(
            f"backup-tools {verb}: warning: --dsn carries a password, which every local user can read in the process "
            "list (ps, /proc/PID/cmdline) while this runs; put it in a password file (~/.pgpass or PGPASSFILE) or a "
            "libpq service file (service=NAME; ~/.pg_service.conf or PGSERVICEFILE) and drop it from --dsn",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; print one actionable line on failure and return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    one = argv[0] if argv and argv[0] in _GROUPS and not {"-h", "--help"} & set(argv) else None
    args = (build_wal_parser() if one in WAL_VERBS else build_parser(only=one)).parse_args(argv)
    if getattr(args, "dsn", None):
        warn_password_on_argv(args.verb, args.dsn)
    if getattr(args, "s3_timeout", None) is not None:  # every repository this command opens, and its children
        os.environ["PGDRILL_S3_TIMEOUT"] = str(args.s3_timeout)
    from backup_tools.monitor.audit import audited  # the audit trail: one place for every verb (wal-push/fetch skip it)
    from backup_tools.repo.residency import guard

    with audited(args, argv) as run:
        try:
            guard(args)  # residency: backup and copy refuse a repository outside the allowed regions
            run.code = args.func(args)
        except BackupToolsError as e:
            verb = args.verb if args.verb != "evidence" else f"evidence {args.evidence_verb}"
            print(f"backup-tools {verb}: error: {one_line(e)}", file=sys.stderr)
            run.fail(e.exit_code, one_line(e), cause=e)
        except KeyboardInterrupt:
            print(f"backup-tools {args.verb}: interrupted; nothing was marked as done", file=sys.stderr)
            run.fail(130, "interrupted")
    return run.code


if __name__ == "__main__":
    sys.exit(main())
