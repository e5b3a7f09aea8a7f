"""Repository verbs: list, verify, check, prune, keygen."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_tools.cli.common import add_key, add_pgbin, add_repo, add_verb, log, pg_for
from backup_tools.config import load_pgdrill_section
from backup_tools.errors import BackupNotFound
from backup_tools.repo import open_repository


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


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify backups: checksums, pg_verifybackup, optionally a restore test."""
    from backup_tools.lifecycle.verify import verify_backup
    from backup_tools.restore.pitr import choose_backup

    repo = open_repository(args.repo)
    if args.wal:
        return _verify_wal(repo, args)
    records = repo.list_backups()
    if args.backup == "all":
        chosen = [r for r in records if r.is_good]
    elif args.backup == "latest":
        chosen = [choose_backup(records, None)] if any(r.kind != "logical" for r in records) else records[-1:]
    else:
        chosen = [repo.read_catalog(args.backup)]
    if not chosen:
        raise BackupNotFound(f"no backup to verify in {repo.url}; take one with `backup-tools backup` or check --repo")
    pg = pg_for(args)
    results = [
        verify_backup(repo, r, pg=pg, key_file=args.key_file, restore_test=args.restore_test, log=log) for r in chosen
    ]
    if args.json:
        print(json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=2))
    for r in results:
        if not args.json:
            print(f"{'OK' if r.ok else 'FAILED'} {r.backup_id}: " + "; ".join(r.problems or r.checked))
    bad = [r.backup_id for r in results if not r.ok]
    if bad:
        log(f"backup-tools verify: {len(bad)} backup(s) failed verification: {', '.join(bad)}; do not rely on them")
        return 1
    return 0


def _verify_wal(repo: Any, args: argparse.Namespace) -> int:
    """verify --wal: read every archived WAL object, report damaged ones and gaps per timeline."""
    from backup_tools.wal.verify import verify_wal

    result = verify_wal(repo, key_file=args.key_file, log=log)
    if args.json:
        print(json.dumps(asdict(result) | {"ok": result.ok}, indent=2))
    else:
        for tl, (first, last) in sorted(result.timelines.items()):
            print(f"timeline {tl}: {first} .. {last}")
        for key, problem in sorted(result.problems.items()):
            print(f"FAILED {key}: {problem}")
        for gap in result.gaps:
            print(f"GAP {gap}")
        print(f"{'OK' if result.ok else 'FAILED'}: {result.checked} WAL file(s) read, {len(result.problems)} damaged, "
              f"{len(result.gaps)} gap(s)")  # fmt: skip
    if not result.ok:
        log("backup-tools verify --wal: the WAL archive has problems (above); point-in-time recovery cannot pass "
            "them: re-archive from pg_wal if the files are still there, else take a new full backup now")  # fmt: skip
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check freshness, failures, sizes, WAL, verification and drills; alert receivers on failures."""
    from backup_tools.cli.check import cmd_check as run_check

    return run_check(args)


def cmd_prune(args: argparse.Namespace) -> int:
    """Apply the GFS retention policy."""
    from backup_tools.lifecycle.prune import prune
    from backup_tools.lifecycle.retention import RetentionPolicy

    config = load_pgdrill_section(Path(args.config), "retention", what="retention config") if args.config else None
    policy = RetentionPolicy.from_config(config)
    result = prune(open_repository(args.repo), policy, now=datetime.now(UTC), dry_run=args.dry_run, tz=args.tz, log=log)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(result.plan.delete)} backup(s) and {len(result.plan.wal_delete)} WAL file(s)")
    for backup_id, until in sorted(result.locked.items()):
        print(f"locked {backup_id}: S3 Object Lock until {until.isoformat(timespec='minutes')}, deletable after that")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Print a new encryption key file (32 random bytes, base64)."""
    from backup_tools.security.keys import generate_key_file_text

    if sys.stdout.isatty():
        log("backup-tools keygen: writing a secret key to a terminal; redirect it: backup-tools keygen > FILE")
    sys.stdout.write(generate_key_file_text())
    return 0


def add_list_parser(verbs: Any) -> None:
    """Add list."""
    ls = add_verb(verbs, "list", cmd_list, "list backups, oldest first")
    add_repo(ls)
    ls.add_argument("--json", action="store_true", help="print the catalog records as JSON")


def add_repo_parsers(verbs: Any) -> None:
    """Add verify, check, prune and keygen."""
    v = add_verb(verbs, "verify", cmd_verify, "re-read backups against their checksums and pg_verifybackup")
    add_repo(v)
    v.add_argument("--backup", default="latest", metavar="ID", help="backup id, 'latest' (default) or 'all'")
    v.add_argument("--restore-test", action="store_true", help="also restore into a temp dir, start it and fingerprint")
    v.add_argument("--json", action="store_true")
    v.add_argument("--wal", action="store_true",
                   help="verify the WAL archive instead: read every object (checksums, key, header against name), "
                   "report gaps per timeline")  # fmt: skip
    add_key(v)
    add_pgbin(v)
    c = add_verb(
        verbs, "check", cmd_check, "check backup freshness, failures, size, WAL and drills (exit 1 on problems)"
    )
    add_repo(c)
    c.add_argument("--max-age", help="oldest acceptable newest backup (default: config max_age, else 26h)")
    c.add_argument("--json", action="store_true")
    from backup_tools.cli.check import add_check_options

    add_check_options(c)
    p = add_verb(verbs, "prune", cmd_prune, "delete backups and WAL outside the GFS retention policy")
    add_repo(p)
    p.add_argument("--dry-run", action="store_true", help="show the plan, delete nothing")
    p.add_argument("--config", help="TOML file with [tool.pgdrill.retention] daily/weekly/monthly/yearly")
    p.add_argument("--tz", default="UTC", help="time zone of the daily/weekly buckets (default UTC)")
    add_verb(verbs, "keygen", cmd_keygen, "print a new encryption key file (redirect it to a file)")
