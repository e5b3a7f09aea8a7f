"""HTML for the report's top: the drill summary (one row per scenario × method) and the results-table drill columns."""

from __future__ import annotations

from html import escape
from typing import Any

from backup_tools.durations import format_seconds
from reports.history import worst

COLUMNS = ("Scenario", "RTO measured / target", "RPO measured / target", "Lost commits", "Verdict")
LABELS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "SKIPPED"}


def header_cells() -> list[str]:
    """Header cells of the drill columns."""
    return [f'<th class="sortable" data-column-type="pgdrill">{escape(c)}</th>' for c in COLUMNS]


def figure(measured: float | None, target: float | None) -> str:
    """'measured / target', the measured part red when it misses the target."""
    if measured is None:
        return f'<span class="pgdrill-muted">not measured</span> / {escape(format_seconds(target))}'
    css = "pgdrill-ok" if target is None or measured <= target else "pgdrill-miss"
    return f'<span class="{css}">{escape(format_seconds(measured))}</span> / {escape(format_seconds(target))}'


def lost(record: dict[str, Any]) -> str:
    """Lost acknowledged commits, red when over the allowed number."""
    value, limit = record.get("lost_commits"), record.get("target_max_lost_commits")
    if value is None:
        return '<span class="pgdrill-muted">–</span>'
    bad = limit is not None and value > limit
    text = f"{value}" + (f" (max {limit})" if limit is not None else "")
    return f'<span class="{"pgdrill-miss" if bad else "pgdrill-ok" if value == 0 else ""}">{escape(text)}</span>'


def verdict_badge(verdict: str) -> str:
    """A coloured PASS/FAIL/ERROR/SKIPPED badge."""
    return f'<span class="pgdrill-badge pgdrill-{escape(verdict)}">{LABELS.get(verdict, verdict.upper())}</span>'


def why(record: dict[str, Any]) -> str:
    """One line saying why a drill did not pass: its violations, else the failure message."""
    if record.get("verdict") == "pass":
        return ""
    return "; ".join(record.get("violations") or []) or record.get("reason") or ""


def row_cells(record: dict[str, Any] | None) -> list[str]:
    """The drill figures of one result row (blank cells for tests that are not drills)."""
    if record is None:
        return ["<td></td>"] * len(COLUMNS)
    reason = why(record)
    return [
        f"<td>{escape(record['scenario'])} / {escape(str(record['method']))}</td>",
        f"<td>{figure(record.get('rto_seconds'), record.get('target_rto_seconds'))}</td>",
        f"<td>{figure(record.get('rpo_seconds'), record.get('target_rpo_seconds'))}</td>",
        f"<td>{lost(record)}</td>",
        f'<td class="pgdrill-{escape(record["verdict"])}" title="{escape(reason)}">{verdict_badge(record["verdict"])}'
        + (f'<div class="pgdrill-why">{escape(reason)}</div>' if reason else "")
        + "</td>",
    ]


def case_label(record: dict[str, Any]) -> str:
    """The case id of a parametrized drill, else its test function's name without 'test_'."""
    case = record.get("case")
    if case and case != record.get("method"):
        return case
    name = record["test"].rsplit("::", 1)[-1].split("[", 1)[0].removeprefix("test_")
    return f"{name}[{case}]" if case else name


def summary_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario × method, in first-run order: worst verdict and figures, every case's reason."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["scenario"], str(record["method"])), []).append(record)
    rows = []
    for group in groups.values():
        row = worst(group)
        row["cases"] = [case_label(r) for r in group]
        reasons = [(r.get("case"), why(r)) for r in group if why(r)]
        multi = len(group) > 1
        row["why"] = " | ".join(f"[{case}] {text}" if multi and case else text for case, text in reasons)
        rows.append(row)
    return rows


def headline(records: list[dict[str, Any]]) -> str:
    """The sentence at the very top: how many drills passed, and the first reason if any did not."""
    counts = {v: sum(1 for r in records if r["verdict"] == v) for v in LABELS}
    bad = counts["fail"] + counts["error"]
    parts = [f"{counts[v]} {LABELS[v].lower()}" for v in ("fail", "error", "skip") if counts[v]]
    css = "pgdrill-headline-fail" if bad else "pgdrill-headline-pass"
    text = (f"{bad} of {len(records)} drills did NOT meet their targets" if bad
            else f"All {counts['pass']} drills that ran met their recovery targets")  # fmt: skip
    detail = f" ({', '.join(parts)})" if parts else ""
    return f'<p class="pgdrill-headline {css}">{escape(text + detail)}</p>'


def render_summary(records: list[dict[str, Any]], *, run_id: str) -> str:
    """The drill summary table shown at the top of the report."""
    body = []
    for row in summary_rows(records):
        cases = ", ".join(c for c in row["cases"] if c)
        body.append(
            f'<tr class="pgdrill-row-{escape(row["verdict"])}"><td>{verdict_badge(row["verdict"])}</td>'
            f"<td><b>{escape(row['scenario'])}</b></td><td>{escape(str(row['method']))}"
            + (f'<br><span class="pgdrill-muted">{escape(cases)}</span>' if cases else "")
            + f"</td><td>{figure(row.get('rto_seconds'), row.get('target_rto_seconds'))}</td>"
            f"<td>{figure(row.get('rpo_seconds'), row.get('target_rpo_seconds'))}</td><td>{lost(row)}</td>"
            f'<td class="pgdrill-why">{escape(row["why"])}</td></tr>'
        )
    return (
        f'<section id="pgdrill-summary-section">{headline(records)}'
        '<table class="pgdrill-table" id="pgdrill-summary"><thead><tr><th>Verdict</th><th>Scenario</th><th>Method</th>'
        "<th>RTO measured / target</th><th>RPO measured / target</th><th>Lost acked commits</th>"
        f"<th>Why it did not pass</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
        f'<p class="pgdrill-muted">Run {escape(run_id)}. RTO: failure injected → restored cluster accepts connections '
        "and its data checks pass. RPO: failure → newest acknowledged commit that survived. Worst case shown when a "
        "scenario/method has several cases; details per drill in the results table below.</p></section>"
    )
