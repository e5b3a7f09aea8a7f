"""Drill history: appending and reading JSON lines, trend series, pass rates and drill staleness."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from backup_tools.monitor.history import (
    FIELDS,
    HISTORY_VERSION,
    append_history,
    last_passes,
    read_history,
    stale_scenarios,
)
from reports.history import pass_rate, render_history, series

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def result(scenario: str, verdict: str, *, days_ago: float, run: str | None = None, method: str = "pitr", **kw) -> dict:
    when = NOW - timedelta(days=days_ago)
    return {"scenario": scenario, "method": method, "verdict": verdict, "finished_at": when.isoformat(),
            "run_id": run or f"run-{days_ago}", "rto_seconds": 60.0, "rpo_seconds": 1.0, "target_rto_seconds": 900.0,
            "target_rpo_seconds": 120.0, **kw}  # fmt: skip


def test_append_writes_one_versioned_line_per_drill_and_read_returns_them_oldest_first(tmp_path):
    path = tmp_path / "history.jsonl"
    with path.open("ab") as handle:
        assert append_history(handle, [result("corruption", "pass", days_ago=1, secret_note="x")]) == 1
        assert (
            append_history(
                handle, [result("corruption", "fail", days_ago=3), result("restore-test", "pass", days_ago=2)]
            )
            == 2
        )
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["history_version"] for line in lines] == [HISTORY_VERSION] * 3
    assert set(lines[0]) == {"history_version", *FIELDS}  # only the documented fields, nothing else leaks in
    history = read_history(path)
    assert [(r["scenario"], r["verdict"]) for r in history.records] == [
        ("corruption", "fail"),
        ("restore-test", "pass"),
        ("corruption", "pass"),
    ]


def test_read_skips_and_counts_lines_that_are_not_drill_results(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text(
        json.dumps(result("corruption", "pass", days_ago=1)) + "\n{truncated\n\n[1, 2]\n" + '{"scenario": "x"}\n'
    )
    history = read_history(path)
    assert len(history.records) == 1 and history.bad_lines == [2, 4, 5]
    assert read_history(tmp_path / "missing.jsonl").records == []


def test_staleness_flags_scenarios_never_passed_or_passed_too_long_ago():
    records = [
        result("accidental-deletion", "pass", days_ago=2),
        result("corruption", "pass", days_ago=40),
        result("corruption", "fail", days_ago=1),
        result("complete-loss", "fail", days_ago=1),
    ]
    stale = stale_scenarios(records, max_age=timedelta(days=30), now=NOW,
                            scenarios=["accidental-deletion", "corruption", "complete-loss", "regional-outage"])  # fmt: skip
    assert [(s.scenario, s.last_pass and s.age.days) for s in stale] == [
        ("corruption", 40),
        ("complete-loss", None),
        ("regional-outage", None),
    ]
    assert str(stale[0]) == "corruption: last passed 40 d 0 h ago (2026-01-20 12:00 UTC)"
    assert str(stale[1]) == "complete-loss: no passing drill on record"
    assert stale_scenarios(records, max_age=timedelta(days=60), now=NOW, scenarios=["corruption"]) == []
    assert last_passes(records)["corruption"] == NOW - timedelta(days=40)


def test_series_has_one_point_per_run_worst_case_and_keeps_the_last_n():
    records = [result("corruption", "pass", days_ago=d, rto_seconds=100.0 - d) for d in (5, 4, 3, 2)]
    records += [  # run "r1" ran two cases of the same scenario/method: one point, worst verdict and figures
        result("accidental-deletion", "pass", days_ago=1, run="r1", rto_seconds=30.0),
        result("accidental-deletion", "fail", days_ago=1, run="r1", rto_seconds=50.0, rpo_seconds=None),
        result("accidental-deletion", "skip", days_ago=0.5, run="r2"),
    ]
    points = series(records, last=3)
    assert [p["rto_seconds"] for p in points[("corruption", "pitr")]] == [96.0, 97.0, 98.0]
    deletion = points[("accidental-deletion", "pitr")]
    assert len(deletion) == 1 and deletion[0]["verdict"] == "fail" and deletion[0]["rto_seconds"] == 50.0
    assert deletion[0]["rpo_seconds"] == 1.0
    assert pass_rate(points[("corruption", "pitr")]) == (3, 3) and pass_rate(deletion) == (0, 1)


def test_history_section_draws_one_chart_per_scenario_with_every_point_and_the_pass_rate():
    runs = ((3, "pass", 60.0), (2, "fail", 950.0), (1, "pass", 70.0))
    records = [result("corruption", v, days_ago=d, rto_seconds=rto) for d, v, rto in runs]
    html = render_history(records, last=20, stale_after=timedelta(days=30), scenarios=["corruption", "restore-test"],
                          source="history.jsonl", now=NOW, bad_lines=[7])  # fmt: skip
    figure = re.search(r'<figure class="pgdrill-trend" data-scenario="corruption" data-method="pitr" data-points="3">'
                       r"(.*?)</figure>", html, re.S).group(1)  # fmt: skip

    def points(gid: str) -> int:
        group = re.search(rf'<g id="{gid}">(.*?)</g>\s*</g>', figure, re.S)
        return group.group(1).count("<use ") if group else 0

    assert (points("rto_seconds-met"), points("rto_seconds-missed")) == (2, 1)  # red where the RTO missed its target
    assert (points("rpo_seconds-met"), points("rpo_seconds-missed")) == (3, 0)
    assert "RTO — corruption / pitr" in figure and "- - target 15 min 00 s" in figure  # real text, not paths
    assert "2 of 3 (66%)" in html
    assert "restore-test: no passing drill on record" in html
    assert "1 unreadable line(s)" in html


@pytest.mark.parametrize("points", [1, 2, 12])
def test_trend_chart_has_exactly_the_points_given(points):
    from reports.charts import trend_svg

    runs = [result("restore-test", "pass", days_ago=i, rto_seconds=float(i + 1)) for i in range(points)]
    svg = trend_svg(runs, label="restore-test / full")
    group = re.search(r'<g id="rto_seconds-met">(.*?)</g>\s*</g>', svg, re.S).group(1)
    assert group.count("<use ") == points
    assert svg.startswith("<svg") and "<?xml" not in svg
