"""The cloud-check verb: managed databases' (AWS RDS / Aurora) backup settings against the team's expectations."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from backup_tools.cli.common import add_verb


def cmd_cloud_check(args: argparse.Namespace) -> int:
    """Print one line per setting per database; exit 1 when any is out of policy."""
    from backup_tools.monitor.cloud import check_rds, load_cloud_config

    config = load_cloud_config(Path(args.config))
    findings = check_rds(config)  # the endpoint: AWS_ENDPOINT_URL(_RDS), as boto3 reads it
    bad = [f for f in findings if not f.ok]
    if args.json:
        print(json.dumps({"ok": not bad, "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        for f in findings:
            print(f.line())
        if not findings:
            print(f"no RDS instance or Aurora cluster matched in {', '.join(config.regions)}")
    return 1 if bad else 0


def add_cloud_check_parser(verbs: Any) -> None:
    """Add cloud-check."""
    c = add_verb(verbs, "cloud-check", cmd_cloud_check,
                 "check AWS RDS / Aurora backup settings (retention, PITR, window, replication, encryption)")  # fmt: skip
    c.add_argument("--config", required=True, help="TOML with [cloud] provider, regions, [cloud.expect]")
    c.add_argument("--json", action="store_true", help="print the findings as JSON")
