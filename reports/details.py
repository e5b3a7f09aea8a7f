"""Per-drill details shown when a result row is expanded: figures, phase timeline, backups, checks, logs, commands."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from backup_tools.units import format_bytes, format_seconds
from reports.charts import phase_timeline_svg
from reports.render import figure, is_fault_detection, lost, rpo_cell, source_label, verdict_badge, why


def _or_dash(value: Any) -> str:
    return "–" if value is None else str(value)


def _table(head: list[str], rows: list[list[str]], *, css: str = "") -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="pgdrill-table {css}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def figures_html(r: dict[str, Any]) -> str:
    """The measured figures against the targets, and the recovery markers."""
    rows = [
        [
            "RTO (failure → accepting connections and checks passed)",
            figure(r.get("rto_seconds"), r.get("target_rto_seconds")),
        ],
        ["RPO (failure → newest surviving acknowledged commit)", rpo_cell(r)],
        ["Acknowledged commits lost", lost(r)],
        ["Acknowledged commits before the failure", escape(_or_dash(r.get("acknowledged_before_failure")))],
        ["Commits after the failure discarded by the restore", escape(_or_dash(r.get("discarded_after_failure")))],
        ["Failure injected (t_fail)", escape(str(r.get("t_fail") or "–"))],
        ["Recovered at", escape(str(r.get("recovered_at") or "–"))],
        ["Data restored", source_label(r)],
    ]
    projection = (r.get("notes") or {}).get("projection")
    if isinstance(projection, dict) and projection.get("projected_rto_seconds") is not None:
        projected, target = projection["projected_rto_seconds"], r.get("target_rto_seconds")
        css = "pgdrill-ok" if target is None or projected <= target else "pgdrill-warn"  # a verdict only if asserted
        rows.insert(1, [f"RTO projected to {escape(str(projection.get('production_size')))} (size-bound phases scaled)",
                        f'<span class="{css}">{escape(format_seconds(projected))}</span> / '
                        f"{escape(format_seconds(target))}"])  # fmt: skip
    return _table(["Figure", "Measured / target"], rows, css="pgdrill-figures")


def fault_html(r: dict[str, Any]) -> str:
    """A fault-detection drill's figures: the fault injected, whether and how it was caught, the message."""
    fault = r.get("fault") or {}
    rows = [["Fault injected", escape(str(fault.get("injected") or "–"))],
            ["Caught", "yes" if fault.get("detected") else '<span class="pgdrill-miss">no</span>'],
            ["Caught by", escape(str(fault.get("detected_by") or "–"))],
            ["Message", escape(str(fault.get("message") or why(r) or "–"))],
            ["Data", source_label(r)]]  # fmt: skip
    return _table(["Fault-detection drill (not a recovery: no RTO/RPO)", ""], rows, css="pgdrill-figures")


def phases_html(r: dict[str, Any]) -> str:
    """The phase timeline chart and the same figures as a table."""
    phases = r.get("phases") or []
    if not phases:
        return '<p class="pgdrill-muted">No recovery phases were recorded.</p>'
    total = sum(p["seconds"] for p in phases) or 1.0
    rows = [[escape(p["name"]), escape(format_seconds(p.get("start_seconds"))) if p.get("start_seconds") is not None
             else "–", escape(format_seconds(p["seconds"])), f"{100 * p['seconds'] / total:.0f}%"] for p in phases]  # fmt: skip
    chart = phase_timeline_svg(phases, rto=r.get("rto_seconds"), target_rto=r.get("target_rto_seconds"))
    return f'<div class="pgdrill-timeline">{chart}</div>' + _table(
        ["Phase", "Started after t_fail", "Took", "Share"], rows
    )


def backups_html(r: dict[str, Any]) -> str:
    """The backups the drill restored from."""
    backups = r.get("backups") or []
    if not backups:
        return '<p class="pgdrill-muted">The drill did not report which backups it used (drill.notes["backups"]).</p>'
    rows = []
    for b in backups:
        sha = str(b.get("sha256") or "–")
        verified = {True: "yes", False: '<span class="pgdrill-miss">no</span>'}.get(b.get("verified"), "–")
        size = format_bytes(b["size_bytes"]) if isinstance(b.get("size_bytes"), int | float) else "–"
        rows.append([escape(str(b.get("id", "–"))), escape(str(b.get("kind", "–"))), size,
                     f'<code title="{escape(sha)}">{escape(sha[:16])}{"…" if len(sha) > 16 else ""}</code>',
                     escape(str(b.get("created_at") or "–")), escape(format_seconds(b.get("age_seconds"))),
                     escape(str(b.get("location") or "–")), verified])  # fmt: skip
    return _table(["Backup id", "Kind", "Size", "sha256", "Created", "Age at failure", "Where", "Verified"], rows)


def checks_html(r: dict[str, Any]) -> str:
    """The data checks on the restored cluster."""
    checks = r.get("checks") or []
    if not checks:
        return '<p class="pgdrill-miss">No data checks were recorded: the restore was not verified.</p>'
    rows = [[escape(c["name"]), verdict_badge("pass" if c["passed"] else "fail"), escape(c.get("detail") or "")]
            for c in checks]  # fmt: skip
    return _table(["Data check", "Result", "Detail"], rows)


def notes_html(r: dict[str, Any]) -> str:
    """Everything else the drill noted (seed sizes, projection inputs, expected failures), collapsed."""
    notes = r.get("notes") or {}
    if not notes:
        return ""
    rows = [[escape(str(k)), f"<code>{escape(json.dumps(v, default=str)[:2000])}</code>"] for k, v in notes.items()]
    return f"<details><summary>Other drill notes</summary>{_table(['Note', 'Value'], rows)}</details>"


def _pre(lines: list[str], empty: str) -> str:
    return (
        f'<pre class="pgdrill-pre">{escape(chr(10).join(lines))}</pre>'
        if lines
        else f'<p class="pgdrill-muted">{empty}</p>'
    )


def controls_text(r: dict[str, Any]) -> str:
    """Which controls this drill evidences, or why it evidences none."""
    evidenced, mapped = r.get("evidences") or [], ", ".join(r.get("controls") or [])
    if evidenced:
        return f"Controls evidenced: {escape(', '.join(evidenced))}."
    if is_fault_detection(r):
        return "Controls evidenced: none (a fault-detection drill recovers nothing)."
    if not mapped:
        return "Controls evidenced: none mapped."
    why_not = ("exercised on synthetic data" if (r.get("data_source") or "synthetic") == "synthetic"
               else "the drill did not pass")  # fmt: skip
    return f"Controls evidenced: none ({why_not}; mapped: {escape(mapped)})."


def render_details(r: dict[str, Any], *, log_lines: list[str]) -> str:
    """The expanded-row HTML of one drill."""
    failed = r["verdict"] in ("fail", "error")
    reason = why(r)
    head = f"<p>{verdict_badge(r['verdict'], fault=is_fault_detection(r))} <b>{escape(r['scenario'])} / {escape(str(r['method']))}</b>"
    head += f' — <span class="pgdrill-why">{escape(reason)}</span></p>' if reason else "</p>"
    logs = _pre(log_lines, "No server log lines were captured.")
    commands = _pre(r.get("commands") or [], 'The drill listed no commands (drill.notes["commands"]).')
    evidence = ", ".join(escape(p) for p in r.get("server_logs") or []) or "none"
    return (
        f'<div class="pgdrill-details">{head}<div class="pgdrill-cols">'
        f"<div>{fault_html(r) if is_fault_detection(r) else figures_html(r)}</div>"
        f"<div><h4>Data checks</h4>{checks_html(r)}</div></div>"
        f"<h4>Recovery phases</h4>{phases_html(r)}<h4>Backups used</h4>{backups_html(r)}"
        + (
            f"<h4>Server log: relevant lines</h4>{logs}<h4>Commands run</h4>{commands}"
            if failed
            else f"<details><summary>Commands run</summary>{commands}</details>"
        )  # fmt: skip
        + notes_html(r)
        + f'<p class="pgdrill-muted">Server logs in the evidence bundle: {evidence}. '
        f"{controls_text(r)}</p></div>"
    )
