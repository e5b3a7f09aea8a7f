"""`python -m reports merge DIR... --out DIR`: one report and signed evidence bundle from the shards of a drill run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backup_tools.errors import BackupToolsError, UsageError
from backup_tools.security.evidence import load_public_key
from reports import evidence
from reports.merge import merge, summary_lines


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m reports`."""
    p = argparse.ArgumentParser(prog="python -m reports", description="pgdrill report tools")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="merge the run directories of --shard runs into one report and evidence bundle")
    m.add_argument("shards", nargs="+", type=Path, help="shard run directories (--report-dir), or folders holding them")
    m.add_argument("--out", required=True, type=Path, help="new directory for the merged report and bundle")
    m.add_argument("--history-file", type=Path, default=Path("reports/history.jsonl"),
                   help="drill history the merged run is appended to once (default reports/history.jsonl)")  # fmt: skip
    m.add_argument("--evidence-key", default=None,
                   help=f"Ed25519 private key signing the merged manifest (or ${evidence.KEY_ENV})")  # fmt: skip
    m.add_argument("--shard-public-key", default=None,
                   help="require every shard's bundle to be signed by this key (default: hashes, and any signature)")  # fmt: skip
    m.add_argument("--allow-missing-shards", action="store_true",
                   help="merge even when a share of the --shard split is absent (recorded as 'Missing shards')")  # fmt: skip
    m.add_argument("--evidence-archive", action="store_true", help="also write the merged bundle as <out>.tar.gz")
    m.add_argument("--stale-days", type=int, default=30, help="a scenario not passed within this many days is a gap")
    m.add_argument("--history-runs", type=int, default=20, help="runs per scenario shown in the trend charts")
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every merged drill passed (or was skipped), 1 when one failed or the merge failed, 2 on bad input."""
    args = parser().parse_args(argv)
    try:
        public = None
        if args.shard_public_key:
            path = Path(args.shard_public_key)
            try:
                public = load_public_key(path.read_bytes(), source=str(path))
            except OSError as e:
                raise UsageError(f"cannot read --shard-public-key {path}: {e.strerror}") from e
        records, bundle = merge(args.shards, out=args.out, history_path=args.history_file, key_path=args.evidence_key,
                                archive=args.evidence_archive, public_key=public, stale_days=args.stale_days,
                                history_runs=args.history_runs, allow_missing=args.allow_missing_shards)  # fmt: skip
    except UsageError as e:
        print(f"python -m reports merge: {e}", file=sys.stderr)
        return 2
    except (BackupToolsError, OSError) as e:
        print(f"python -m reports merge: {e}", file=sys.stderr)
        return 1
    for line in summary_lines(records, bundle):
        print(line)
    return 1 if any(r.get("verdict") in ("fail", "error") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
