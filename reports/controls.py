"""Which audit controls each drill scenario evidences, and the report's compliance section (per control: runs, last pass, gap)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from backup_tools.monitor.history import last_passes

SEVERITY = {"pass": 0, "skip": 1, "fail": 2, "error": 3}

# Control id -> what it asks, in a few words an auditor recognises.
CONTROLS: dict[str, str] = {
    "SOC 2 A1.2": "backup processes and recovery infrastructure are in place and operate",
    "SOC 2 A1.3": "recovery plan procedures are tested",
    "SOC 2 CC8.1": "changes are tested before deployment, with a way back",
    "ISO 27001 A.8.13": "backup copies are kept and regularly restored to test them",
    "ISO 27001 A.8.14": "redundancy: processing survives the loss of a facility",
    "ISO 27001 A.8.32": "change management: changes can be rolled back",
    "ISO 27001 A.5.30": "ICT readiness for business continuity is planned and tested",
    "GDPR Art. 32(1)(c)": "availability of and access to personal data can be restored in a timely manner",
    "GDPR Art. 32(1)(d)": "the effectiveness of these measures is regularly tested",
    "GDPR Art. 17": "erasure: a subject erased before a restore stays erased after it",
    "HIPAA 164.308(a)(7)(ii)(A)": "data backup plan: retrievable exact copies of ePHI",
    "HIPAA 164.308(a)(7)(ii)(B)": "disaster recovery plan: procedures restore any loss of data",
    "HIPAA 164.308(a)(7)(ii)(D)": "testing and revision of contingency plans",
}

_BASE = ("SOC 2 A1.2", "SOC 2 A1.3", "ISO 27001 A.8.13", "GDPR Art. 32(1)(c)", "GDPR Art. 32(1)(d)",
         "HIPAA 164.308(a)(7)(ii)(A)", "HIPAA 164.308(a)(7)(ii)(D)")  # fmt: skip
_DR = ("HIPAA 164.308(a)(7)(ii)(B)",)
_CONTINUITY = ("ISO 27001 A.5.30",)

# Scenario -> the controls a passing drill of it evidences.
SCENARIO_CONTROLS: dict[str, tuple[str, ...]] = {
    "accidental-deletion": _BASE + _DR,
    "corruption": _BASE + _DR,
    "database-failure": _BASE + _DR + _CONTINUITY,
    "complete-loss": _BASE + _DR + _CONTINUITY,
    "regional-outage": _BASE + _DR + _CONTINUITY + ("ISO 27001 A.8.14",),
    "predeploy-rollback": _BASE + ("SOC 2 CC8.1", "ISO 27001 A.8.32"),
    "file-storage-loss": _BASE + _DR,
    "restore-test": _BASE,
    "gdpr-erasure": _BASE + ("GDPR Art. 17",),
}
SCENARIOS = tuple(SCENARIO_CONTROLS)
STATUS_LABELS = {
    "ok": "EVIDENCED",
    "stale": "NOT IN THIS RUN",
    "synthetic": "EXERCISED ON SYNTHETIC DATA",
    "gap": "GAP",
}


def controls_for(scenario: str) -> list[str]:
    """The controls a scenario evidences (none for a scenario not in the table)."""
    return list(SCENARIO_CONTROLS.get(scenario, ()))


def on_team_data(record: dict[str, Any]) -> bool:
    """Whether a drill (or history line) restored the team's own backup or database, not a synthetic stand-in."""
    return (record.get("data_source") or "synthetic") != "synthetic"


def control_status(
    control: str, *, run: list[dict[str, Any]], history: list[dict[str, Any]], stale_after: timedelta, now: datetime
) -> dict[str, Any]:
    """One control's row: mapped scenarios, recovery drills in this run, last pass on team data, and the gap if any."""
    scenarios = [s for s, controls in SCENARIO_CONTROLS.items() if control in controls]
    ran = [r for r in run if r["scenario"] in scenarios and r.get("family") != "fault-detection"]
    skipped = sorted({f"{r['scenario']}/{r['method']}" for r in ran if r["verdict"] == "skip"})
    passed_now = [r for r in ran if r["verdict"] == "pass" and on_team_data(r)]
    synthetic_now = [r for r in ran if r["verdict"] == "pass" and not on_team_data(r)]
    passes = {s: t for s, t in last_passes([h for h in history if on_team_data(h)]).items() if s in scenarios}
    last = max(passes.items(), key=lambda kv: kv[1], default=None)
    if passed_now:
        status, gap = "ok", ""
    elif last and now - last[1] <= stale_after:
        status, gap = "stale", "no passing drill on the team's data in this run; last one is within the allowed age"
    elif synthetic_now:
        status = "synthetic"
        gap = ("exercised on synthetic data: " + ", ".join(sorted({f"{r['scenario']}/{r['method']}" for r in synthetic_now}))
               + " passed on a seeded stand-in, not on the team's backups or database")  # fmt: skip
    else:
        status = "gap"
        failed = sorted({f"{r['scenario']}/{r['method']}" for r in ran if r["verdict"] in ("fail", "error")})
        if failed:
            gap = "drills ran but none passed: " + ", ".join(failed)
        elif skipped:
            gap = "the mapped drills were skipped: " + ", ".join(skipped)
        elif last:
            gap = (f"no drill on the team's data in this run; last pass {(now - last[1]).days} days ago is older "
                   f"than {stale_after.days} days")  # fmt: skip
        else:
            gap = "no drill mapped to this control has ever passed on the team's backups or database"
    return {"control": control, "asks": CONTROLS[control], "scenarios": scenarios, "ran": ran, "last_pass": last,
            "status": status, "gap": gap}  # fmt: skip


def render_compliance(
    run: list[dict[str, Any]], history: list[dict[str, Any]], *, stale_after: timedelta, now: datetime | None = None
) -> str:
    """The compliance section: per control, the drills run, their last pass, and any gap."""
    now = now or datetime.now(UTC)
    rows = []
    for control in CONTROLS:
        row = control_status(control, run=run, history=history, stale_after=stale_after, now=now)
        by_scenario: dict[str, list[dict[str, Any]]] = {}
        for r in row["ran"]:
            by_scenario.setdefault(r["scenario"], []).append(r)
        ran = (
            "<br>".join(
                f'<span class="pgdrill-badge pgdrill-{escape(v)}">{escape(v.upper())}</span> {escape(s)}: '
                + escape(", ".join(sorted({str(r["method"]) for r in rs})))
                + ("" if any(on_team_data(r) for r in rs) else ' <span class="pgdrill-muted">(synthetic)</span>')
                for s, rs in by_scenario.items()
                for v in [max((r["verdict"] for r in rs), key=lambda x: SEVERITY.get(x, 3))]
            )
            or "none"
        )
        last = row["last_pass"]
        last_text = f"{last[1]:%Y-%m-%d %H:%M} UTC ({escape(last[0])})" if last else "never"
        label = STATUS_LABELS[row["status"]]
        rows.append(
            f'<tr class="pgdrill-control-{row["status"]}"><td><b>{escape(control)}</b><br>'
            f'<span class="pgdrill-muted">{escape(row["asks"])}</span></td>'
            f"<td>{escape(', '.join(row['scenarios']))}</td><td>{ran}</td><td>{last_text}</td>"
            f'<td><span class="pgdrill-badge pgdrill-status-{row["status"]}">{label}</span> {escape(row["gap"])}</td></tr>'
        )
    unmapped = sorted({r["scenario"] for r in run} - set(SCENARIO_CONTROLS))
    note = (f'<p class="pgdrill-muted">Scenarios with no control mapping (add them to reports/controls.py): '
            f"{escape(', '.join(unmapped))}</p>") if unmapped else ""  # fmt: skip
    return (
        '<section id="pgdrill-compliance"><h2>Compliance: controls evidenced</h2>'
        '<p class="pgdrill-muted">A control is <b>evidenced</b> only when a recovery drill mapped to it passed in this '
        "run on the team's own backups or database (data source team-backup or team-database). A pass on synthetic "
        "(seeded) data shows the procedure works, not that the team's backups restore: it is <b>exercised on "
        "synthetic data</b>. Without either, the last pass on the team's data is shown, and it is a gap after "
        f"{stale_after.days} days. Fault-detection drills evidence no control.</p>"
        '<table class="pgdrill-table"><thead><tr><th>Control</th><th>Scenarios mapped</th><th>Drills in this run</th>'
        f"<th>Last pass on the team's data</th><th>Status</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{note}</section>"
    )
