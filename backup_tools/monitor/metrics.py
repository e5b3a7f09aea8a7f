"""`backup-tools check --prometheus FILE`: the checks and their figures as OpenMetrics text for node_exporter's
textfile collector (written atomically, so a scrape never reads half a file)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from backup_tools.catalog import BackupRecord
from backup_tools.monitor.checks import CheckOutcome, finished_at, series_of
from backup_tools.monitor.coverage import restore_tested_at
from backup_tools.pg.run import redact

SEVERITY = {"ok": 0, "warning": 1, "critical": 2}
# name -> (help, unit); every metric is a gauge
METRICS: dict[str, tuple[str, str]] = {
    "pgdrill_check_ok": ("1 when the check passed, 0 when it failed", ""),
    "pgdrill_check_severity": ("0 ok, 1 warning, 2 critical", ""),
    "pgdrill_backup_age_seconds": ("Age of the newest good backup of the series", "seconds"),
    "pgdrill_backup_size_bytes": ("Size of the newest good backup of the series", "bytes"),
    "pgdrill_backup_last_verified_timestamp_seconds": ("When a backup of the series was last verified (checksums)",
                                                       "seconds"),
    "pgdrill_backup_last_restore_test_timestamp_seconds": ("When a backup of the series was last restore-tested",
                                                           "seconds"),
    "pgdrill_drill_rto_seconds": ("Measured RTO of the newest drill of the scenario and method", "seconds"),
    "pgdrill_drill_rpo_seconds": ("Measured RPO of the newest drill of the scenario and method", "seconds"),
    "pgdrill_drill_passed": ("1 when the newest drill of the scenario and method passed", ""),
    "pgdrill_drill_last_run_timestamp_seconds": ("When the newest drill of the scenario and method finished",
                                                 "seconds"),
    "pgdrill_check_run_timestamp_seconds": ("When backup-tools check ran", "seconds"),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {float(value)!r}"


def _newest_drills(history: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest recovery drill per (scenario, method, data source) of the history (fault detection left out)."""
    newest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for record in history:
        if record.get("family") == "fault-detection" or record.get("verdict") == "skip":
            continue
        key = (str(record.get("scenario")), str(record.get("method")), str(record.get("data_source") or "synthetic"))
        if key not in newest or str(record.get("finished_at")) >= str(newest[key].get("finished_at")):
            newest[key] = record
    return [newest[k] for k in sorted(newest)]


def openmetrics(results: list[CheckOutcome], records: list[BackupRecord], history: Iterable[dict[str, Any]], *,
                repo_url: str, now: datetime) -> str:  # fmt: skip
    """The OpenMetrics text: check states, newest backup per series, verification times, newest drill figures."""
    repo = redact(repo_url)
    samples: dict[str, list[str]] = {name: [] for name in METRICS}
    for r in results:
        samples["pgdrill_check_ok"].append(_sample("pgdrill_check_ok", {"repo": repo, "check": r.name}, int(r.ok)))
        samples["pgdrill_check_severity"].append(
            _sample("pgdrill_check_severity", {"repo": repo, "check": r.name}, 0 if r.ok else SEVERITY[r.severity])
        )
    for series in sorted({series_of(r) for r in records if r.is_good}):
        good = [r for r in records if r.is_good and series_of(r) == series]
        newest, labels = max(good, key=finished_at), {"repo": repo, "series": series}
        samples["pgdrill_backup_age_seconds"].append(
            _sample("pgdrill_backup_age_seconds", labels, max((now - finished_at(newest)).total_seconds(), 0.0))
        )
        samples["pgdrill_backup_size_bytes"].append(_sample("pgdrill_backup_size_bytes", labels, newest.size))
        verified = [r.verified_at for r in good if r.verified_at]
        if verified:
            name = "pgdrill_backup_last_verified_timestamp_seconds"
            samples[name].append(_sample(name, labels, max(verified).timestamp()))
        tested = [t for r in good if (t := restore_tested_at(r))]
        if tested:
            name = "pgdrill_backup_last_restore_test_timestamp_seconds"
            samples[name].append(_sample(name, labels, max(tested).timestamp()))
    for d in _newest_drills(history):
        labels = {"scenario": str(d.get("scenario")), "method": str(d.get("method")),
                  "data_source": str(d.get("data_source") or "synthetic")}  # fmt: skip
        for key, name in (("rto_seconds", "pgdrill_drill_rto_seconds"), ("rpo_seconds", "pgdrill_drill_rpo_seconds")):
            if isinstance(d.get(key), int | float):
                samples[name].append(_sample(name, labels, d[key]))
        samples["pgdrill_drill_passed"].append(_sample("pgdrill_drill_passed", labels, int(d.get("verdict") == "pass")))
        try:
            when = datetime.fromisoformat(str(d.get("finished_at"))).timestamp()
        except ValueError:
            continue
        samples["pgdrill_drill_last_run_timestamp_seconds"].append(
            _sample("pgdrill_drill_last_run_timestamp_seconds", labels, when)
        )
    samples["pgdrill_check_run_timestamp_seconds"].append(
        _sample("pgdrill_check_run_timestamp_seconds", {"repo": repo}, now.timestamp())
    )
    lines = []
    for name, (help_text, unit) in METRICS.items():
        if not samples[name]:
            continue
        lines += [f"# TYPE {name} gauge"] + ([f"# UNIT {name} {unit}"] if unit else []) + [f"# HELP {name} {help_text}."]
        lines += samples[name]
    return "\n".join([*lines, "# EOF"]) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Write the file atomically (temp file in the same directory, then rename), readable by the collector."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
