"""HTML cells for the drill columns of the pytest-html results table."""

from __future__ import annotations

from html import escape
from typing import Any

from backup_tools.durations import format_seconds

COLUMNS = ("Scenario", "RTO measured / target", "RPO measured / target", "Lost commits", "Verdict")


def header_cells() -> list[str]:
    """Header cells of the drill columns."""
    return [f'<th class="sortable" data-column-type="pgdrill">{escape(c)}</th>' for c in COLUMNS]


def _figure(measured: float | None, target: float | None) -> str:
    if measured is None:
        return "–"
    ok = target is None or measured <= target
    css = "pgdrill-ok" if ok else "pgdrill-miss"
    return f'<span class="{css}">{escape(format_seconds(measured))}</span> / {escape(format_seconds(target))}'


def row_cells(record: dict[str, Any] | None) -> list[str]:
    """The drill figures of one result row (blank cells for tests that are not drills)."""
    if record is None:
        return ["<td></td>"] * len(COLUMNS)
    verdict = "PASS" if record.get("outcome") == "passed" else "FAIL"
    reason = record.get("reason") or ""
    lost = record.get("lost_commits")
    return [
        f"<td>{escape(record['scenario'])} / {escape(record['method'])}</td>",
        f"<td>{_figure(record.get('rto_seconds'), record.get('target_rto_seconds'))}</td>",
        f"<td>{_figure(record.get('rpo_seconds'), record.get('target_rpo_seconds'))}</td>",
        f"<td>{'–' if lost is None else lost}</td>",
        f'<td class="pgdrill-{verdict.lower()}" title="{escape(reason)}">{verdict}</td>',
    ]
