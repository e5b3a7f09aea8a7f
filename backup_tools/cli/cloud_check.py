"""The cloud-check verb: managed databases' (AWS RDS / Aurora) backup settings against the team's expectations."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backup_tools.cli.common import add_verb

if TYPE_CHECKING:
    from backup_tools.monitor.alerts import Delivery
    from backup_tools.monitor.cloud import Finding


def cmd_cloud_check(args: argparse.Namespace) -> int:
    """Print one line per setting per database, alert the receivers on any out of policy; exit 1 then."""
    from backup_tools.monitor.alerts import receivers_from_config
    from backup_tools.monitor.cloud import check_rds, load_cloud_config
    from backup_tools.monitor.config import MonitorConfig

    config = load_cloud_config(Path(args.config))
    monitor = MonitorConfig.load(Path(args.config))  # receivers: [monitor.email] / [monitor.webhook], as `check`
    receivers = [] if args.no_alerts else receivers_from_config(monitor.receivers)
    findings = check_rds(config)  # the endpoint: AWS_ENDPOINT_URL(_RDS), as boto3 reads it
    bad = [f for f in findings if not f.ok]
    if not args.json:
        for f in findings:
            print(f.line())
        if not findings:
            print(f"no RDS instance or Aurora cluster matched in {', '.join(config.regions)}")
        sys.stdout.flush()  # the results are out before any (slow) delivery
    deliveries = _alert(findings, receivers, where=f"aws-rds {', '.join(config.regions)}", config_path=args.config)
    if args.json:
        print(json.dumps({"ok": not bad, "findings": [asdict(f) for f in findings],
                          "alerts": [asdict(d) for d in deliveries]}, indent=2))  # fmt: skip
    for d in deliveries:
        if d.ok:
            print(f"backup-tools cloud-check: alert sent to {d.receiver}", file=sys.stderr)
        else:
            print(f"backup-tools cloud-check: error: alert delivery to {d.receiver} failed after {d.attempts} "
                  f"attempt(s): {d.error}; the findings above stand; fix the receiver settings in --config",
                  file=sys.stderr)  # fmt: skip
    return 1 if bad or any(not d.ok for d in deliveries) else 0


def _alert(findings: list[Finding], receivers: list[Any], *, where: str, config_path: str) -> list[Delivery]:
    """Send one 'failed' alert listing every setting out of policy (nothing when all are in policy)."""
    from backup_tools.monitor.alerts import Alert, deliver, local_host

    bad = [f for f in findings if not f.ok]
    if not bad or not receivers:
        return []
    checks = tuple({"name": f"{f.resource} {f.setting}", "severity": "critical", "ok": False, "message": f.message}
                   for f in bad)  # fmt: skip
    alert = Alert("failed", where, local_host(), datetime.now(UTC), checks, len(findings) - len(bad),
                  details=f"backup-tools cloud-check --config {config_path}")  # fmt: skip
    return deliver(alert, receivers)


def add_cloud_check_parser(verbs: Any) -> None:
    """Add cloud-check."""
    c = add_verb(verbs, "cloud-check", cmd_cloud_check,
                 "check AWS RDS / Aurora backup settings (retention, PITR, window, replication, encryption)")  # fmt: skip
    c.add_argument("--config", required=True, help="TOML with [cloud] provider, regions, [cloud.expect]")
    c.add_argument("--json", action="store_true", help="print the findings as JSON")
    c.add_argument("--no-alerts", action="store_true",
                   help="print the findings, send no alert to the receivers of [monitor] in --config")  # fmt: skip
