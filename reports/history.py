"""History and trends in the report: RTO/RPO per scenario over the last runs, pass rate, drill staleness."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any, BinaryIO

from backup_tools.errors import UsageError
from backup_tools.monitor.history import stale_scenarios
from reports.charts import trend_svg

SEVERITY = {"pass": 0, "skip": 1, "fail": 2, "error": 3}


def worst(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One point for several drills of the same scenario/method in a run: worst verdict, largest RTO, RPO, loss."""
    records = list(records)
    point = dict(max(records, key=lambda r: SEVERITY.get(r.get("verdict"), 3)))
    for key in ("rto_seconds", "rpo_seconds", "lost_commits"):
        values = [r[key] for r in records if r.get(key) is not None]
        point[key] = max(values) if values else None
    return point


def series(records: Iterable[dict[str, Any]], *, last: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Per (scenario, method): one point per run of its recovery drills (skips and fault detection left out), oldest
    first, the last `last` runs."""
    by_key: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for record in records:
        if record.get("verdict") == "skip" or record.get("family") == "fault-detection":
            continue
        runs = by_key.setdefault((record["scenario"], str(record.get("method"))), {})
        runs.setdefault(str(record.get("run_id")), []).append(record)
    out = {}
    for key, runs in sorted(by_key.items()):
        points = sorted((worst(group) for group in runs.values()), key=lambda p: str(p.get("finished_at")))
        out[key] = points[-last:]
    return out


def pass_rate(points: list[dict[str, Any]]) -> tuple[int, int]:
    """(passed, ran) over the points."""
    return sum(1 for p in points if p.get("verdict") == "pass"), len(points)


def render_history(
    records: list[dict[str, Any]],
    *,
    last: int,
    stale_after: timedelta,
    scenarios: Iterable[str],
    source: str,
    bad_lines: list[int] | None = None,
    now: datetime | None = None,
) -> str:
    """The trends section: pass-rate table, staleness list, and one RTO/RPO chart per scenario/method."""
    now = now or datetime.now(UTC)
    groups = series(records, last=last)
    rows, charts = [], []
    for (scenario, method), points in groups.items():
        passed, ran = pass_rate(points)
        label = f"{scenario} / {method}"
        latest = points[-1]["verdict"]
        css = "ok" if passed == ran else ("warn" if passed else "miss")
        rows.append(
            f'<tr><td>{escape(label)}</td><td class="pgdrill-rate-{css}">{passed} of {ran} ({100 * passed // ran}%)</td>'
            f'<td><span class="pgdrill-badge pgdrill-{escape(latest)}">{escape(latest.upper())}</span></td></tr>'
        )
        if all(p.get("rto_seconds") is None and p.get("rpo_seconds") is None for p in points):
            continue  # nothing measured yet (errors, never recovered): the pass-rate row says so
        charts.append(f'<figure class="pgdrill-trend" data-scenario="{escape(scenario)}" data-method="{escape(method)}" '
                      f'data-points="{len(points)}">{trend_svg(points, label=label)}</figure>')  # fmt: skip
    stale = stale_scenarios(records, max_age=stale_after, scenarios=scenarios, now=now)
    stale_html = (
        "<ul>" + "".join(f"<li>{escape(str(s))}</li>" for s in stale) + "</ul>"
        if stale
        else f"<p>Every scenario passed within the last {stale_after.days} days.</p>"
    )
    warn = (f'<p class="pgdrill-miss">{len(bad_lines)} unreadable line(s) in the history file were skipped '
            f"(lines {escape(', '.join(map(str, bad_lines[:10])))}).</p>") if bad_lines else ""  # fmt: skip
    return (
        '<section id="pgdrill-history"><h2>History and trends</h2>'
        f'<p class="pgdrill-muted">From {escape(source)}: the last {last} runs of each scenario/method '
        "(a run with several cases of one scenario/method is one point: its worst figures and verdict).</p>"
        f'{warn}<table class="pgdrill-table" id="pgdrill-pass-rate"><thead><tr><th>Scenario / method</th>'
        f"<th>Pass rate</th><th>Latest</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<h3>Drill staleness: scenarios not passed within {stale_after.days} days</h3>{stale_html}"
        f'<div class="pgdrill-trends">{"".join(charts)}</div></section>'
    )


def open_history(path: Path) -> BinaryIO:
    """The drill history file opened for appending (its folder created)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a+b")
    except OSError as e:
        raise UsageError(f"cannot open the drill history {path}: {e.strerror}; pass --history-file") from e
