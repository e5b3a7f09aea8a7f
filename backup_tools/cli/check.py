"""`backup-tools check`: run the monitor's checks, print one line each (or JSON), alert receivers on failures."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backup_tools.errors import UsageError

if TYPE_CHECKING:  # the modules themselves load in cmd_check: every other verb's parser imports this one
    from backup_tools.monitor.alerts import Alert
    from backup_tools.monitor.checks import CheckOutcome
    from backup_tools.monitor.config import MonitorConfig


def add_check_options(sub: argparse.ArgumentParser) -> None:
    """The options `check` has besides --repo, --max-age and --json."""
    sub.add_argument("--config", help="TOML file with [tool.pgdrill.monitor] thresholds and alert receivers")
    sub.add_argument("--history-file", help="drill history (JSON lines) for the drill staleness check")
    sub.add_argument("--no-alerts", action="store_true", help="print the results, send no alert (but --digest)")
    sub.add_argument("--erasure-ledger", metavar="URL", help="flag backups still holding subjects erased long ago")
    sub.add_argument("--erasure-days", type=int, default=30, metavar="N", help="the erasure promise in days (30)")
    sub.add_argument("--prometheus", metavar="FILE",
                     help="also write the results as OpenMetrics text (node_exporter textfile collector), atomically")
    sub.add_argument("--digest", action="store_true",
                     help="also send a summary of every check, passing or not, to the receivers (run it daily)")  # fmt: skip


def cmd_check(args: argparse.Namespace) -> int:
    """Run the checks, print them, alert on failures; exit 1 if a check or an alert delivery failed."""
    from backup_tools.monitor.alerts import deliver, receivers_from_config
    from backup_tools.monitor.checks import run_checks
    from backup_tools.monitor.config import MonitorConfig
    from backup_tools.monitor.erasure_check import erasure_outcome
    from backup_tools.monitor.residency import check_outcome
    from backup_tools.repo import open_repository
    from backup_tools.units import parse_duration

    config = MonitorConfig.load(Path(args.config) if args.config else None)
    if args.max_age:
        config = config.with_changes(max_age=parse_duration(args.max_age), max_age_by_series={})
    if getattr(args, "history_file", None):
        config = config.with_changes(drill_history=Path(args.history_file))
    digest, no_alerts = bool(getattr(args, "digest", False)), bool(getattr(args, "no_alerts", False))
    receivers = receivers_from_config(config.receivers) if digest or not no_alerts else []
    if digest and not receivers:
        raise UsageError("--digest needs an email or webhook receiver in [tool.pgdrill.monitor] of --config")
    repo = open_repository(args.repo)
    now = datetime.now(UTC)
    results = run_checks(repo, config, now=now)
    results += [r for r in [check_outcome(repo, getattr(args, "allowed_regions", None))] if r]  # residency
    results += [r for r in [erasure_outcome(repo, args.erasure_ledger, max_days=args.erasure_days, now=now)] if r]
    if not args.json:
        for result in results:
            print(result.line())
        sys.stdout.flush()  # the results are out before any (slow) delivery
    if getattr(args, "prometheus", None):
        _write_metrics(Path(args.prometheus), results, repo=repo, config=config, now=now)
    alerts = _alerts(results, config=config, repo=repo.url, now=now)
    if no_alerts:  # --no-alerts --digest: only the digest
        alerts = []
    if digest:
        from backup_tools.monitor.alerts import Alert, local_host

        ok_count = sum(1 for r in results if r.ok)
        alerts.append(Alert("digest", repo.url, local_host(), now, tuple(r.to_dict() for r in results), ok_count))
    deliveries = [d for alert in alerts for d in deliver(alert, receivers)] if receivers else []
    failed = [r for r in results if not r.ok]
    if args.json:
        doc = {"ok": not failed, "repo": repo.url, "checked_at": now.isoformat(),
               "checks": [r.to_dict() for r in results], "alerts": [asdict(d) for d in deliveries]}  # fmt: skip
        print(json.dumps(doc, indent=2))
    for d in deliveries:
        if d.ok:
            print(f"backup-tools check: alert sent to {d.receiver}", file=sys.stderr)
        else:
            print(f"backup-tools check: error: alert delivery to {d.receiver} failed after {d.attempts} attempt(s): "
                  f"{d.error}; the check results above stand; fix the receiver settings in --config", file=sys.stderr)  # fmt: skip
    return 1 if failed or any(not d.ok for d in deliveries) else 0


def _write_metrics(path: Path, results: list[CheckOutcome], *, repo: Any, config: MonitorConfig, now: datetime) -> None:
    """Write the OpenMetrics file; a write failure is one line on stderr (the check results stand)."""
    from backup_tools.errors import BackupToolsError
    from backup_tools.monitor.history import read_history
    from backup_tools.monitor.metrics import openmetrics, write_textfile

    try:
        records = repo.list_backups()
    except BackupToolsError:
        records = []
    history = read_history(config.drill_history).records if config.drill_history else []
    try:
        write_textfile(path, openmetrics(results, records, history, repo_url=repo.url, now=now))
    except OSError as e:
        raise UsageError(f"cannot write the metrics file {path}: {e.strerror}; check --prometheus") from e


def _alerts(results: list[CheckOutcome], *, config: MonitorConfig, repo: str, now: datetime) -> list[Alert]:
    """A 'failed' alert for failing checks, a 'resolved' one for checks that failed last run (with state_file)."""
    from backup_tools.monitor.alerts import Alert, local_host

    failed = [r for r in results if not r.ok]
    passing = {r.name: r for r in results if r.ok}
    host, ok_count = local_host(), len(passing)
    out = []
    if failed:
        out.append(Alert("failed", repo, host, now, tuple(r.to_dict() for r in failed), ok_count))
    if config.state_file is not None:
        before = _read_state(config.state_file)
        resolved = [passing[name].to_dict() for name in sorted(before) if name in passing]
        if resolved:
            out.append(Alert("resolved", repo, host, now, tuple(resolved), ok_count))
        _write_state(config.state_file, {r.name: before.get(r.name, now.isoformat()) for r in failed})
    return out


def _read_state(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
        return doc.get("failing", {}) if isinstance(doc, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        print(f"backup-tools check: warning: ignoring unreadable state_file {path}: {e}", file=sys.stderr)
        return {}


def _write_state(path: Path, failing: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"failing": failing}, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        print(f"backup-tools check: warning: cannot write state_file {path}: {e.strerror}; "
              "'resolved' alerts need it writable", file=sys.stderr)  # fmt: skip
