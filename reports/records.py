"""One drill's result record: figures from Drill.to_record(), verdict, and what the drill handed over in notes."""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backup_tools.pg.run import redact
from fixtures.drill import FAULT_DETECTION, SYNTHETIC, first_error_line
from reports.controls import controls_for

# Keys a drill may put into drill.notes for the report (see docs/report.md).
BACKUPS, COMMANDS, SERVER_LOGS, SERVER_LOG_TAIL = "backups", "commands", "server_logs", "server_log_tail"
BACKUP_KEYS = ("id", "kind", "size_bytes", "sha256", "created_at", "age_seconds", "location", "verified")
_SEVERE = re.compile(r"\b(PANIC|FATAL|ERROR|WARNING|FAILED|could not|recovery stopping|invalid)\b", re.I)
MAX_LOG_BYTES = 5 << 20
VERDICTS = {"passed": "pass", "failed": "fail", "skipped": "skip"}
_QUALIFIED_ERROR = re.compile(r"^(?:[a-z_]\w*\.)+[A-Z]\w*: ")  # "backup_tools.errors.ToolFailed: " before a message


def evidenced_controls(record: dict[str, Any]) -> list[str]:
    """The controls a record evidences: its scenario's, only for a passing recovery drill on the team's data."""
    evidencing = record.get("verdict") == "pass" and record.get("data_source", SYNTHETIC) != SYNTHETIC
    return list(record.get("controls") or []) if evidencing and record.get("family") != FAULT_DETECTION else []


def redact_value(value: Any) -> Any:
    """The value with every string redacted (passwords in DSNs, URLs, environment assignments)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [redact_value(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def one_line(report: pytest.TestReport) -> str:
    """The skip message's first line, or the failure's first real error line (server FATAL, tool error, failed check)."""
    if report.skipped and isinstance(report.longrepr, tuple):
        lines = str(report.longrepr[2]).removeprefix("Skipped: ").strip().splitlines()
        return redact(lines[0]) if lines else report.outcome
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr or "")
    return redact(first_error_line(_QUALIFIED_ERROR.sub("", message.strip()))) or report.outcome


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value) if value is not None else None


def normalize_backups(value: Any, *, t_fail: str | None) -> list[dict[str, Any]]:
    """Backups the drill used, with the documented keys (others kept), age at the failure filled in when possible."""
    out = []
    for entry in value if isinstance(value, list | tuple) else []:
        if not isinstance(entry, dict):
            entry = {"id": str(entry)}
        backup = {k: entry.get(k) for k in BACKUP_KEYS}
        backup["size_bytes"] = entry.get("size_bytes", entry.get("size"))
        backup["created_at"] = _iso(entry.get("created_at", entry.get("created")))
        if backup["age_seconds"] is None and backup["created_at"] and t_fail:
            try:
                age = datetime.fromisoformat(t_fail) - datetime.fromisoformat(backup["created_at"])
                backup["age_seconds"] = round(age.total_seconds(), 3)
            except (TypeError, ValueError):
                pass
        extra = {k: v for k, v in entry.items() if k not in BACKUP_KEYS and k not in ("size", "created")}
        out.append(redact_value({**{k: v for k, v in backup.items() if v is not None}, **extra}))
    return out


def normalize_commands(value: Any) -> list[str]:
    """Command lines as shell-quoted strings, redacted (argv lists are joined, strings kept)."""
    out = []
    for command in value if isinstance(value, list | tuple) else []:
        if isinstance(command, list | tuple):  # redact each argument first, so quoting stays intact
            out.append(shlex.join(redact(str(a)) for a in command))
        else:
            out.append(redact(str(command)))
    return out


def log_sources(item: pytest.Item, notes: dict[str, Any]) -> dict[str, Path]:
    """Server logs to keep: those named in notes['server_logs'] and every cluster log under the test's tmp_path."""
    sources: dict[str, Path] = {}
    named = notes.get(SERVER_LOGS) or {}
    if isinstance(named, list | tuple):
        named = {Path(p).parent.name or Path(p).stem: p for p in named}
    for name, path in dict(named).items():
        sources[str(name)] = Path(path)
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if isinstance(tmp_path, Path):
        for log in sorted(tmp_path.glob("clusters/*/server.log")):
            sources.setdefault(log.parent.name, log)
    return sources


def copy_logs(sources: dict[str, Path], dest: Path, *, run_dir: Path) -> tuple[list[str], dict[str, str]]:
    """Copy logs (redacted, at most the last 5 MiB) into dest; return their paths in the run dir and their texts."""
    kept, texts = [], {}
    for name, path in sources.items():
        try:
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - MAX_LOG_BYTES))
                text = redact(f.read().decode(errors="replace"))
        except OSError:
            continue
        target = dest / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.log"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        kept.append(target.relative_to(run_dir).as_posix())
        texts[name] = text
    return kept, texts


def relevant_lines(texts: dict[str, str], *, tail: int = 8, limit: int = 40) -> list[str]:
    """Per log: lines with a severity worth reading (ERROR, FATAL, PANIC, WARNING, ...) and the last few lines."""
    out = []
    for name, text in texts.items():
        lines = text.splitlines()
        picked = [i for i, line in enumerate(lines) if _SEVERE.search(line)]
        keep = sorted(set(picked[-(limit - tail) :]) | set(range(max(0, len(lines) - tail), len(lines))))
        out.extend(f"[{name}] {lines[i]}" for i in keep)
    return out


def build_record(
    *, item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo, figures: dict[str, Any]
) -> dict[str, Any]:
    """The drill's record: test identity, verdict, one-line reason, figures, handover notes split out and redacted."""
    notes = dict(figures.get("notes") or {})
    verdict = "error" if report.when == "setup" and report.failed else VERDICTS.get(report.outcome, report.outcome)
    callspec = getattr(item, "callspec", None)
    record = {
        "test": item.nodeid,
        "case": callspec.id if callspec else None,
        "outcome": report.outcome,
        "verdict": verdict,
        "reason": None if verdict == "pass" else one_line(report),
        "started_at": datetime.fromtimestamp(call.start, UTC).isoformat(),
        "finished_at": datetime.fromtimestamp(call.stop, UTC).isoformat(),
        **{k: v for k, v in figures.items() if k != "notes"},
    }
    record["backups"] = normalize_backups(notes.pop(BACKUPS, None), t_fail=record.get("t_fail"))
    record["commands"] = normalize_commands(notes.pop(COMMANDS, None))
    tail = notes.pop(SERVER_LOG_TAIL, None)
    record["server_log_tail"] = [redact(str(line)) for line in tail] if isinstance(tail, list | tuple) else []
    notes.pop(SERVER_LOGS, None)
    record["server_logs"] = []
    record.setdefault("family", "recovery")
    record.setdefault("fault", None)
    record.setdefault("data_source", SYNTHETIC)
    record.setdefault("source", None)
    record["controls"] = [] if record["family"] == FAULT_DETECTION else controls_for(record["scenario"])
    record["evidences"] = evidenced_controls(record)
    record["notes"] = redact_value(notes)
    return redact_value(record)
