"""HTML for the report's top: headline, recovery summary, fault-detection drills, and the results-table drill columns."""

from __future__ import annotations

from html import escape
from typing import Any

from backup_tools.units import format_bytes, format_seconds
from reports.history import worst

COLUMNS = ("Scenario", "Data", "RTO measured / target", "RPO measured / target", "Lost commits", "Verdict")
LABELS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "SKIPPED"}
CAUGHT = {"pass": "CAUGHT", "fail": "NOT CAUGHT"}
SOURCES = {"synthetic": "synthetic data", "team-backup": "the team's backup", "team-database": "the team's database"}


def is_fault_detection(record: dict[str, Any]) -> bool:
    """A fault-detection drill: it injects a fault and passes when the fault is caught; it recovers nothing."""
    return record.get("family") == "fault-detection"


def header_cells() -> list[str]:
    """Header cells of the drill columns."""
    return [f'<th class="sortable" data-column-type="pgdrill">{escape(c)}</th>' for c in COLUMNS]


def figure(measured: float | None, target: float | None) -> str:
    """'measured / target', the measured part red only when it misses its own target."""
    if measured is None:
        return f'<span class="pgdrill-muted">not measured</span> / {escape(format_seconds(target))}'
    css = "pgdrill-ok" if target is None or measured <= target else "pgdrill-miss"
    return f'<span class="{css}">{escape(format_seconds(measured))}</span> / {escape(format_seconds(target))}'


def zero_loss(record: dict[str, Any]) -> bool:
    """An RPO target of 0: the promise is zero lost commits, judged on lost commits, not on seconds."""
    return record.get("target_rpo_seconds") == 0


def commits(n: int) -> str:
    """'1 lost commit', '3 lost commits'."""
    return f"{n} lost commit{'' if n == 1 else 's'}"


def rto_cell(record: dict[str, Any]) -> str:
    """Measured RTO against its target, with the projection to --production-size or else the seeded size it ran on."""
    out = figure(record.get("rto_seconds"), record.get("target_rto_seconds"))
    notes = record.get("notes") or {}
    projection = notes.get("projection") if isinstance(notes.get("projection"), dict) else {}
    projected, target = projection.get("projected_rto_seconds"), record.get("target_rto_seconds")
    if projected is not None:
        css = "pgdrill-ok" if target is None or projected <= target else "pgdrill-warn"
        return (out + f'<br><span class="{css}">projected {escape(format_seconds(projected))}</span>'
                f'<span class="pgdrill-muted"> at {escape(str(projection.get("production_size")))}</span>')  # fmt: skip
    size = seeded_size(record)
    return out + (f'<br><span class="pgdrill-muted">measured on a {escape(size)} seed</span>' if size else "")


def seeded_size(record: dict[str, Any]) -> str:
    """The size of the synthetic data a drill ran on ('105.3 MiB, 100,512 rows'), or '' when not synthetic/unknown."""
    if record.get("data_source", "synthetic") != "synthetic" or record.get("rto_seconds") is None:
        return ""
    notes = record.get("notes") or {}
    size, rows = notes.get("seed_size_bytes"), notes.get("seed")
    total = sum(v for v in rows.values() if isinstance(v, int)) if isinstance(rows, dict) else None
    parts = ([format_bytes(size)] if isinstance(size, int | float) else []) + ([f"{total:,} rows"] if total else [])
    return ", ".join(parts)


def rpo_cell(record: dict[str, Any]) -> str:
    """Measured RPO against its target; a target of 0 shows lost commits against '0 lost commits'."""
    if record.get("rpo_basis") == "data age":
        return data_age_cell(record)
    if not zero_loss(record):
        return figure(record.get("rpo_seconds"), record.get("target_rpo_seconds"))
    lost_now, limit = record.get("lost_commits"), record.get("target_max_lost_commits") or 0
    if lost_now is None:
        return f'<span class="pgdrill-muted">not measured</span> / {commits(limit)}'
    css = "pgdrill-ok" if lost_now <= limit else "pgdrill-miss"
    gap = record.get("rpo_seconds")
    note = (f'<br><span class="pgdrill-muted">newest kept commit {escape(format_seconds(gap))} before the failure'
            "</span>") if gap is not None else ""  # fmt: skip
    return f'<span class="{css}">{commits(lost_now)}</span> / {commits(limit)}{note}'


def data_age_cell(record: dict[str, Any]) -> str:
    """RPO of a restore of the team's data: the age of its newest data, judged only against a non-zero target."""
    age, target = record.get("rpo_seconds"), record.get("target_rpo_seconds")
    if age is None:
        return f'<span class="pgdrill-muted">data age not measured</span> / {escape(format_seconds(target))}'
    if not target:  # a zero-loss promise is about lost commits, which a data age cannot show
        return (f'data age <span class="pgdrill-muted">{escape(format_seconds(age))}</span> / {commits(0)}'
                '<br><span class="pgdrill-muted">not judged: the target is about lost commits</span>')  # fmt: skip
    css = "pgdrill-ok" if age <= target else "pgdrill-miss"
    return f'data age <span class="{css}">{escape(format_seconds(age))}</span> / {escape(format_seconds(target))}'


def lost(record: dict[str, Any]) -> str:
    """Lost acknowledged commits, red when over the allowed number."""
    value, limit = record.get("lost_commits"), record.get("target_max_lost_commits")
    if value is None:
        return '<span class="pgdrill-muted">–</span>'
    bad = limit is not None and value > limit
    text = f"{value}" + (f" (max {limit})" if limit is not None else "")
    return f'<span class="{"pgdrill-miss" if bad else "pgdrill-ok" if value == 0 else ""}">{escape(text)}</span>'


def source_label(record: dict[str, Any]) -> str:
    """Where the drill's data came from, as a short HTML label: synthetic, or the team's backup/database and where."""
    kind = record.get("data_source") or "synthetic"
    if kind == "synthetic":
        return '<span class="pgdrill-source pgdrill-source-synthetic">synthetic</span>'
    src = record.get("source") or {}
    what = "team backup" if kind == "team-backup" else "team database"
    detail = " ".join(str(src[k]) for k in ("kind", "location") if src.get(k))
    if src.get("backup"):
        detail += f", backup {src['backup']}"
    if src.get("created_at"):
        detail += f", made {src['created_at']}"
    return (f'<span class="pgdrill-source pgdrill-source-team">{what}</span>'
            + (f'<br><span class="pgdrill-muted">{escape(detail)}</span>' if detail else ""))  # fmt: skip


def verdict_badge(verdict: str, *, fault: bool = False) -> str:
    """A coloured PASS/FAIL/ERROR/SKIPPED badge (CAUGHT / NOT CAUGHT for a fault-detection drill)."""
    label = (CAUGHT if fault else {}).get(verdict) or LABELS.get(verdict, verdict.upper())
    return f'<span class="pgdrill-badge pgdrill-{escape(verdict)}">{label}</span>'


def why(record: dict[str, Any]) -> str:
    """One line saying why a drill did not pass: its violations, else the failure's first real error line."""
    if record.get("verdict") == "pass":
        return ""
    return "; ".join(record.get("violations") or []) or record.get("reason") or ""


def row_cells(record: dict[str, Any] | None) -> list[str]:
    """The drill figures of one result row (blank cells for tests that are not drills)."""
    if record is None:
        return ["<td></td>"] * len(COLUMNS)
    reason = why(record)
    fault = is_fault_detection(record)
    name = f"{escape(record['scenario'])} / {escape(str(record['method']))}"
    if fault:
        injected = escape(str((record.get("fault") or {}).get("injected") or "fault"))
        figures = [f'<td>fault-detection: {injected}<br>{name}</td>', f"<td>{source_label(record)}</td>",
                   '<td class="pgdrill-muted">not a recovery</td>', '<td class="pgdrill-muted">–</td>',
                   '<td class="pgdrill-muted">–</td>']  # fmt: skip
    else:
        figures = [f"<td>{name}</td>", f"<td>{source_label(record)}</td>", f"<td>{rto_cell(record)}</td>",
                   f"<td>{rpo_cell(record)}</td>", f"<td>{lost(record)}</td>"]  # fmt: skip
    return [*figures,
            f'<td class="pgdrill-{escape(record["verdict"])}" title="{escape(reason)}">'
            f"{verdict_badge(record['verdict'], fault=fault)}"
            + (f'<div class="pgdrill-why">{escape(reason)}</div>' if reason else "") + "</td>"]  # fmt: skip


def case_label(record: dict[str, Any]) -> str:
    """The case id of a parametrized drill, else its test function's name without 'test_'."""
    case = record.get("case")
    if case and case != record.get("method"):
        return case
    name = record["test"].rsplit("::", 1)[-1].split("[", 1)[0].removeprefix("test_")
    return f"{name}[{case}]" if case else name


def summary_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario × method × data source, in first-run order: worst verdict and figures, every reason."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for record in records:
        key = (record["scenario"], str(record["method"]), str(record.get("data_source") or "synthetic"))
        groups.setdefault(key, []).append(record)
    rows = []
    for group in groups.values():
        ran = [r for r in group if r["verdict"] != "skip"]
        row = worst(ran or group)  # a skipped case does not hide the verdict of the cases that ran
        row["cases"] = [case_label(r) for r in group]
        multi = len(group) > 1
        reasons = [(r.get("case"), why(r)) for r in (ran or group) if why(r)]
        row["why"] = " | ".join(f"[{case}] {text}" if multi and case else text for case, text in reasons)
        skipped = [(r.get("case"), why(r)) for r in group if ran and r["verdict"] == "skip"]
        row["skipped"] = " | ".join(f"[{case}] {text}" if case else text for case, text in skipped)
        rows.append(row)
    return rows


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def headline(records: list[dict[str, Any]]) -> str:
    """The top of the report: recovery verdict over the table's rows, where the data came from, fault detection."""
    recovery = summary_rows([r for r in records if not is_fault_detection(r)])
    faults = [r for r in records if is_fault_detection(r)]
    counts = {v: sum(1 for r in recovery if r["verdict"] == v) for v in LABELS}
    bad = counts["fail"] + counts["error"]
    parts = [f"{counts[v]} {LABELS[v].lower()}" for v in ("fail", "error", "skip") if counts[v]]
    cases = sum(len(r["cases"]) for r in recovery)
    parts += [f"{cases} runs counting cases"] if cases != len(recovery) else []
    detail = f" ({', '.join(parts)})" if parts else ""
    if bad:
        text = f"{bad} of {_count(len(recovery), 'recovery drill')} did NOT meet their targets{detail}"
    elif counts["pass"]:
        text = f"All {_count(counts['pass'], 'recovery drill')} that ran met their recovery targets{detail}"
    else:
        text = f"No recovery drill ran{detail}"
    css = "pgdrill-headline-fail" if bad else "pgdrill-headline-pass"
    return (f'<p class="pgdrill-headline {css}">{escape(text)}</p>' + provenance_line(recovery)
            + fault_line(faults))  # fmt: skip


def provenance_line(rows: list[dict[str, Any]]) -> str:
    """'12 drills on synthetic data; 2 on the team's backups', and whether this run can evidence any control."""
    ran = [r for r in rows if r["verdict"] != "skip"]
    by = {k: sum(1 for r in ran if (r.get("data_source") or "synthetic") == k) for k in SOURCES}
    parts = [f"{by['synthetic']} on synthetic data"] if by["synthetic"] else []
    parts += [f"{by[k]} on {SOURCES[k]}s" if by[k] > 1 else f"1 on {SOURCES[k]}" for k in SOURCES
              if k != "synthetic" and by[k]]  # fmt: skip
    if not ran:
        return ""
    text = f"{_count(len(ran), 'drill')}: " + "; ".join(parts) + "."
    team = len(ran) - by["synthetic"]
    if not team:
        css, tail = (
            "pgdrill-provenance-synthetic",
            (
                " Synthetic data is a seeded stand-in the suite made: this run "
                "evidences no compliance control and restored no team backup."
            ),
        )
    else:
        css, tail = "pgdrill-provenance-team", " Only drills on the team's own backups or databases evidence controls."
    return f'<p class="pgdrill-provenance {css}">{escape(text + tail)}</p>'


def fault_line(faults: list[dict[str, Any]]) -> str:
    """How many fault-detection drills caught their fault (never counted as recoveries)."""
    if not faults:
        return ""
    caught = sum(1 for r in faults if r["verdict"] == "pass")
    css = "pgdrill-ok" if caught == len(faults) else "pgdrill-miss"
    return (f'<p class="pgdrill-faults-line"><span class="{css}">{caught} of {_count(len(faults), "fault-detection drill")}'
            " caught the fault injected</span> (listed apart below; they are not recoveries).</p>")  # fmt: skip


def render_faults(records: list[dict[str, Any]]) -> str:
    """The fault-detection table: what was injected, how it was caught, the message."""
    faults = [r for r in records if is_fault_detection(r)]
    if not faults:
        return ""
    body = []
    for r in faults:
        fault = r.get("fault") or {}
        message = fault.get("message") or why(r) or ""
        body.append(
            f'<tr class="pgdrill-row-{escape(r["verdict"])}"><td>{verdict_badge(r["verdict"], fault=True)}</td>'
            f"<td><b>{escape(str(fault.get('injected') or 'fault'))}</b></td>"
            f"<td>{escape(r['scenario'])} / {escape(str(r['method']))}"
            f'<br><span class="pgdrill-muted">{escape(case_label(r))}</span></td>'
            f"<td>{escape(str(fault.get('detected_by') or '–'))}</td>"
            f'<td class="{"pgdrill-muted" if r["verdict"] == "pass" else "pgdrill-why"}">{escape(message)}</td></tr>'
        )
    return (
        '<h3 id="pgdrill-faults-title">Fault-detection drills</h3>'
        '<table class="pgdrill-table" id="pgdrill-faults"><thead><tr><th>Verdict</th><th>Fault injected</th>'
        "<th>Restore path</th><th>Caught by</th><th>Message</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
        '<p class="pgdrill-muted">A fault-detection drill damages a backup (or aims the restore wrong) and passes when '
        "the restore or its data checks fail. It measures no RTO or RPO and is never counted as a recovery.</p>"
    )


def render_summary(records: list[dict[str, Any]], *, run_id: str) -> str:
    """The headline, the recovery summary table and the fault-detection table shown at the top of the report."""
    body = []
    for row in summary_rows([r for r in records if not is_fault_detection(r)]):
        cases = ", ".join(c for c in row["cases"] if c)
        body.append(
            f'<tr class="pgdrill-row-{escape(row["verdict"])}"><td>{verdict_badge(row["verdict"])}</td>'
            f"<td><b>{escape(row['scenario'])}</b></td><td>{escape(str(row['method']))}"
            + (f'<br><span class="pgdrill-muted">{escape(cases)}</span>' if cases else "")
            + f"</td><td>{source_label(row)}</td><td>{rto_cell(row)}</td><td>{rpo_cell(row)}</td><td>{lost(row)}</td>"
            f'<td class="pgdrill-why">{escape(row["why"])}'
            + (f'<div class="pgdrill-muted">skipped: {escape(row["skipped"])}</div>' if row["skipped"] else "")
            + "</td></tr>"
        )
    return (
        f'<section id="pgdrill-summary-section">{headline(records)}'
        '<table class="pgdrill-table" id="pgdrill-summary"><thead><tr><th>Verdict</th><th>Scenario</th><th>Method</th>'
        "<th>Data</th><th>RTO measured / target</th><th>RPO measured / target</th><th>Lost acked commits</th>"
        f"<th>Why it did not pass</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
        f'<p class="pgdrill-muted">Run {escape(run_id)}. RTO: failure injected → restored cluster accepts connections '
        "and its data checks pass. RPO: failure → newest acknowledged commit that survived; an RPO target of 0 "
        "promises zero lost commits and is judged on them. Worst case shown when a scenario/method has several cases; "
        "details per drill in the results table below.</p>"
        f"{render_faults(records)}</section>"
    )


def _plain_figure(measured: float | None, target: float | None) -> str:
    return f"{format_seconds(measured) if measured is not None else 'not measured'} / {format_seconds(target)}"


def drill_line(record: dict[str, Any]) -> str:
    """One terminal line for a drill that ended: verdict, scenario/method [case], data source, RTO and RPO vs targets."""
    name = f"{record['scenario']}/{record['method']}" + (f" [{record['case']}]" if record.get("case") else "")
    reason = why(record)
    if is_fault_detection(record):
        fault = record.get("fault") or {}
        label = CAUGHT.get(record["verdict"]) or LABELS.get(record["verdict"], record["verdict"].upper())
        caught = f"caught by {fault['detected_by']}" if fault.get("detected_by") else reason
        return f"{label} fault-detection {name}: {fault.get('injected') or 'fault'}; {caught}"
    label = LABELS.get(record["verdict"], record["verdict"].upper())
    if record["verdict"] == "skip":
        return f"{label} {name}: {reason}"
    source = SOURCES.get(record.get("data_source") or "synthetic", "synthetic data")
    if record.get("rpo_basis") == "data age" and zero_loss(record):
        rpo = f"data age {format_seconds(record.get('rpo_seconds'))} (target: {commits(0)}, not judged on age)"
    elif record.get("rpo_basis") == "data age":
        rpo = "data age " + _plain_figure(record.get("rpo_seconds"), record.get("target_rpo_seconds"))
    elif zero_loss(record):
        lost_now = record.get("lost_commits")
        rpo = f"{'not measured' if lost_now is None else commits(lost_now)} / {commits(0)}"
    else:
        rpo = _plain_figure(record.get("rpo_seconds"), record.get("target_rpo_seconds"))
    line = (f"{label} {name} on {source}: RTO {_plain_figure(record.get('rto_seconds'), record.get('target_rto_seconds'))}"
            f", RPO {rpo}")  # fmt: skip
    return line + (f" — {reason}" if reason else "")
