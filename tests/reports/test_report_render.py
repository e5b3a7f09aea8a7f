"""Report rendering without a server: summary rows, drill details, records from notes, controls and compliance."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reports.charts import phase_timeline_svg, tick
from reports.controls import CONTROLS, SCENARIO_CONTROLS, control_status, render_compliance
from reports.details import render_details
from reports.records import evidenced_controls, normalize_backups, normalize_commands, redact_value, relevant_lines
from reports.render import COLUMNS, headline, render_summary, row_cells, summary_rows

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(scenario="corruption", method="amcheck", verdict="pass", **kw) -> dict:
    return {"test": f"drills/test_x.py::test_{scenario}", "case": None, "scenario": scenario, "method": method,
            "verdict": verdict, "reason": None, "rto_seconds": 42.0, "target_rto_seconds": 900.0, "rpo_seconds": 0.5,
            "target_rpo_seconds": 120.0, "lost_commits": 0, "target_max_lost_commits": None, "violations": [],
            "phases": [{"name": "detect", "seconds": 2.0, "start_seconds": 0.0},
                       {"name": "copy", "seconds": 40.0, "start_seconds": 2.0}],
            "checks": [{"name": "fingerprints", "passed": True, "detail": "5 tables equal"}], "backups": [],
            "commands": ["pg_basebackup -D /b"], "controls": ["SOC 2 A1.3"], "notes": {}, **kw}  # fmt: skip


def cells_text(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)]


def test_failing_row_says_scenario_figure_and_target_in_one_line():
    failed = record(
        verdict="fail", rto_seconds=1200.0, violations=["measured RTO 20 min 00 s exceeds target 15 min 00 s"]
    )
    html = render_summary([record("accidental-deletion", "pitr"), failed], run_id="r1")
    rows = re.findall(r'<tr class="pgdrill-row-(\w+)">(.*?)</tr>', html, re.S)
    assert [v for v, _ in rows] == ["pass", "fail"]
    text = cells_text(rows[1][1])
    assert text[0] == "FAIL" and text[1] == "corruption" and text[2].startswith("amcheck") and text[3] == "synthetic"
    assert text[4] == "20 min 00 s / 15 min 00 s" and "pgdrill-miss" in rows[1][1]
    assert text[-1] == "measured RTO 20 min 00 s exceeds target 15 min 00 s"
    assert cells_text(rows[0][1])[-1] == ""
    assert "1 of 2 recovery drills did NOT meet their targets (1 fail)" in html


def test_cases_of_one_scenario_and_method_are_one_row_with_the_worst_figures_and_each_reason():
    rows = summary_rows([
        record(case="drop-table", rto_seconds=30.0),
        record(case="delete-rows", verdict="fail", rto_seconds=50.0, violations=["data check fingerprints failed: x"]),
    ])  # fmt: skip
    assert len(rows) == 1
    assert (
        rows[0]["verdict"] == "fail"
        and rows[0]["rto_seconds"] == 50.0
        and rows[0]["cases"] == ["drop-table", "delete-rows"]
    )
    assert rows[0]["why"] == "[delete-rows] data check fingerprints failed: x"


def test_error_and_skip_rows_use_the_failure_message_and_headline_counts_them():
    rows = [
        record(verdict="error", reason="RuntimeError: initdb failed", rto_seconds=None),
        record(method="s3", verdict="skip", reason="no S3"),
    ]
    cells = cells_text("".join(row_cells(rows[0])))
    assert cells[2].startswith("not measured / 15 min 00 s") and "RuntimeError: initdb failed" in cells[-1]
    assert "1 of 2 recovery drills did NOT meet their targets (1 error, 1 skipped)" in headline(rows)
    assert "All 1 recovery drill that ran met their recovery targets" in headline([record()])
    assert row_cells(None) == ["<td></td>"] * len(COLUMNS)


def test_lost_commits_over_the_allowed_number_are_red():
    html = "".join(row_cells(record(lost_commits=3, target_max_lost_commits=0)))
    assert '<span class="pgdrill-miss">3 (max 0)</span>' in html


def test_details_of_a_failure_show_log_lines_and_commands_and_of_a_pass_fold_commands_away():
    failed = render_details(record(verdict="fail", violations=["measured RPO 5 min exceeds target 2 min"]),
                            log_lines=["[restored] FATAL:  could not locate required checkpoint record"])  # fmt: skip
    assert "Server log: relevant lines" in failed and "could not locate required checkpoint record" in failed
    assert "<h4>Commands run</h4>" in failed and "pg_basebackup -D /b" in failed
    passed = render_details(record(), log_lines=[])
    assert "Server log: relevant lines" not in passed and "<details><summary>Commands run</summary>" in passed
    assert "measured RPO 5 min exceeds target 2 min" in failed
    assert "<svg" in passed and "No data checks" not in passed


def test_details_list_backups_with_size_sha_and_age_or_say_they_are_missing():
    backup = {"id": "full-1", "kind": "full", "size_bytes": 3 * 1024**3, "sha256": "ab" * 32, "age_seconds": 7200.0}
    html = render_details(record(backups=[backup]), log_lines=[])
    row = cells_text(html.split("Backups used")[1].split("</table>")[0])
    assert row[:6] == ["full-1", "full", "3.0 GiB", "abababababababab…", "–", "2 h 00 min"]
    assert 'drill.notes["backups"]' in render_details(record(), log_lines=[])


def test_backups_from_notes_accept_the_method_aliases_and_compute_age_at_the_failure():
    t_fail = "2026-03-01T12:00:00+00:00"
    out = normalize_backups([{"id": "b1", "kind": "full", "size": 10, "sha256": "", "created": "2026-03-01T09:00:00+00:00",
                              "repo": "s3://k:secret@bucket"}, "b2"], t_fail=t_fail)  # fmt: skip
    assert out[0] == {"id": "b1", "kind": "full", "size_bytes": 10, "sha256": "",
                      "created_at": "2026-03-01T09:00:00+00:00", "age_seconds": 10800.0, "repo": "s3://k:secret@bucket"}  # fmt: skip
    assert out[1] == {"id": "b2"}
    assert normalize_backups(None, t_fail=None) == []


def test_commands_are_quoted_and_redacted():
    out = normalize_commands([["psql", "host=db password=s3cret", "-c", "select 1"], "PGPASSWORD=s3cret pg_dump x"])
    assert out == ["psql 'host=db password=***' -c 'select 1'", "PGPASSWORD=*** pg_dump x"]
    assert redact_value({"dsn": ["postgresql://u:pw@h/db"], "n": 1}) == {"dsn": ["postgresql://u:***@h/db"], "n": 1}


def test_relevant_log_lines_keep_errors_and_the_tail_in_order():
    log = "\n".join([f"LOG:  line {i}" for i in range(50)] + ["FATAL:  bad"] + [f"LOG:  after {i}" for i in range(20)])
    lines = relevant_lines({"primary": log}, tail=3)
    assert lines == [
        "[primary] FATAL:  bad",
        "[primary] LOG:  after 17",
        "[primary] LOG:  after 18",
        "[primary] LOG:  after 19",
    ]


def test_timeline_marks_the_target_when_it_is_in_range_and_says_so_when_not():
    phases = [{"name": "copy", "seconds": 50.0, "start_seconds": 0.0}, {"name": "verify", "seconds": 20.0}]
    near = phase_timeline_svg(phases, rto=70.0, target_rto=60.0)
    assert "target 1 min 00 s" in near and "recovered: RTO 1 min 10 s" in near
    far = phase_timeline_svg(phases, rto=70.0, target_rto=3600.0)
    assert "RTO target 1 h 00 min (far to the right)" in far
    assert tick(0.25) == "250 ms" and tick(-1) == "" and tick(90) == "1 min 30 s"


def test_every_scenario_with_a_target_maps_to_controls_and_every_control_is_evidenced_by_some_scenario():
    targets = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pgdrill"]["targets"]
    assert set(targets) - {"default"} <= set(SCENARIO_CONTROLS)
    mapped = {c for controls in SCENARIO_CONTROLS.values() for c in controls}
    assert mapped == set(CONTROLS)
    for required in ("SOC 2 A1.2", "SOC 2 A1.3", "ISO 27001 A.8.13", "ISO 27001 A.5.30", "GDPR Art. 32(1)(c)",
                     "GDPR Art. 32(1)(d)", "HIPAA 164.308(a)(7)(ii)(B)", "HIPAA 164.308(a)(7)(ii)(D)"):  # fmt: skip
        assert required in CONTROLS


def test_control_status_is_ok_stale_or_gap_from_this_run_and_history():
    stale_after = timedelta(days=30)
    old_pass = {
        "scenario": "predeploy-rollback",
        "verdict": "pass",
        "finished_at": (NOW - timedelta(days=3)).isoformat(),
        "data_source": "team-database",
    }
    ok = control_status("SOC 2 CC8.1", run=[record("predeploy-rollback", data_source="team-database")], history=[],
                        stale_after=stale_after, now=NOW)  # fmt: skip
    stale = control_status("SOC 2 CC8.1", run=[], history=[old_pass], stale_after=stale_after, now=NOW)
    expired = control_status("SOC 2 CC8.1", run=[], history=[old_pass], stale_after=timedelta(days=1), now=NOW)
    failed = control_status("SOC 2 CC8.1", run=[record("predeploy-rollback", verdict="fail")], history=[],
                            stale_after=stale_after, now=NOW)  # fmt: skip
    assert [s["status"] for s in (ok, stale, expired, failed)] == ["ok", "stale", "gap", "gap"]
    assert expired["gap"] == "no drill on the team's data in this run; last pass 3 days ago is older than 1 days"
    assert failed["gap"] == "drills ran but none passed: predeploy-rollback/amcheck"
    html = render_compliance([record("made-up-scenario")], [], stale_after=stale_after, now=NOW)
    assert "Scenarios with no control mapping (add them to reports/controls.py): made-up-scenario" in html
    assert html.count('class="pgdrill-control-gap"') == len(CONTROLS)


def test_synthetic_passes_only_exercise_controls_and_team_passes_evidence_them():
    stale_after = timedelta(days=30)
    synthetic = record("restore-test", "source-repo")
    team = record("restore-test", "source-repo", data_source="team-backup",
                  source={"kind": "pgdrill-repo", "location": "s3://b/p", "backup": "20260301T0000Z-full",
                          "created_at": "2026-03-01T00:00:00+00:00"})  # fmt: skip
    exercised = control_status("ISO 27001 A.8.13", run=[synthetic], history=[], stale_after=stale_after, now=NOW)
    assert exercised["status"] == "synthetic" and exercised["gap"].startswith("exercised on synthetic data")
    html = render_compliance([synthetic], [{**synthetic, "finished_at": NOW.isoformat()}], stale_after=stale_after,
                             now=NOW)  # fmt: skip
    assert "EVIDENCED" not in html.replace("controls evidenced", "") and "EXERCISED ON SYNTHETIC DATA" in html
    evidenced = control_status("ISO 27001 A.8.13", run=[synthetic, team], history=[], stale_after=stale_after, now=NOW)
    assert evidenced["status"] == "ok"
    assert evidenced_controls({**synthetic, "controls": ["SOC 2 A1.2"]}) == []
    assert evidenced_controls({**team, "controls": ["SOC 2 A1.2"]}) == ["SOC 2 A1.2"]
    assert evidenced_controls({**team, "controls": ["SOC 2 A1.2"], "verdict": "fail"}) == []
    assert evidenced_controls({**team, "controls": ["SOC 2 A1.2"], "family": "fault-detection"}) == []


def test_headline_says_where_the_data_came_from_and_counts_the_rows_of_the_table():
    runs = [record("accidental-deletion", "pitr", case="drop-table"), record("accidental-deletion", "pitr", case="x"),
            record("corruption", "amcheck")]  # fmt: skip
    html = render_summary(runs, run_id="r1")
    assert "All 2 recovery drills that ran met their recovery targets (3 runs counting cases)" in html
    assert html.count('<tr class="pgdrill-row-') == 2
    assert "2 drills: 2 on synthetic data." in html and "evidences no compliance control" in html
    team = record("restore-test", "source-repo", data_source="team-backup", source={"kind": "pgdrill-repo",
                  "location": "file:///backups", "backup": "b1", "created_at": None})  # fmt: skip
    mixed = render_summary([*runs, team], run_id="r1")
    assert "3 drills: 2 on synthetic data; 1 on the team&#x27;s backup." in mixed
    assert "team backup" in mixed and "pgdrill-repo file:///backups, backup b1" in mixed


def test_fault_detection_drills_are_listed_apart_and_never_count_as_recoveries():
    caught = record("complete-loss", "full", family="fault-detection", rto_seconds=None, rpo_seconds=None,
                    lost_commits=None, fault={"injected": "backup object corrupted", "detected": True,
                                              "detected_by": "IntegrityCheckFailed", "message": "sha256 mismatch in base.tar"})  # fmt: skip
    html = render_summary([record(), caught], run_id="r1")
    summary = html.split('id="pgdrill-summary"')[1].split("</table>")[0]
    assert "complete-loss" not in summary and summary.count('<tr class="pgdrill-row-') == 1
    faults = html.split('id="pgdrill-faults"')[1].split("</table>")[0]
    assert "backup object corrupted" in faults and "IntegrityCheckFailed" in faults and "sha256 mismatch" in faults
    assert "CAUGHT" in faults
    assert "All 1 recovery drill that ran met" in html and "1 of 1 fault-detection drill caught the fault" in html
    cells = cells_text("".join(row_cells(caught)))
    assert cells[0].startswith("fault-detection: backup object corrupted") and cells[2] == "not a recovery"
    details = render_details(caught, log_lines=[])
    assert "not a recovery: no RTO/RPO" in details and "recovers nothing" in details


def test_rpo_target_zero_is_shown_and_judged_as_lost_commits_and_no_figure_is_red_on_a_passing_row():
    zero = record("predeploy-rollback", "full", rpo_seconds=1.54, target_rpo_seconds=0.0, target_max_lost_commits=0)
    html = render_summary([zero], run_id="r1")
    row = html.split('<tr class="pgdrill-row-pass">')[1].split("</tr>")[0]
    assert "0 lost commits</span> / 0 lost commits" in row and "pgdrill-miss" not in row
    assert "newest kept commit 1.54 s before the failure" in row
    lost_one = cells_text("".join(row_cells({**zero, "verdict": "fail", "lost_commits": 1})))
    assert lost_one[3].startswith("1 lost commit / 0 lost commits")
    ms = cells_text("".join(row_cells(record(rpo_seconds=0.0004, target_rpo_seconds=0.001))))
    assert ms[3] == "0.4 ms / 1 ms"


def test_rto_shows_the_projection_or_else_the_seeded_size():
    seeded = record(notes={"seed": {"users": 1000, "cases": 500}, "seed_size_bytes": 50 * 1024**2})
    assert "measured on a 50.0 MiB, 1,500 rows seed" in cells_text("".join(row_cells(seeded)))[2]
    projected = record(notes={"projection": {"projected_rto_seconds": 7200.0, "production_size": "500.0 GiB"}})
    cell = "".join(row_cells(projected))
    assert "projected 2 h 00 min" in cell and "at 500.0 GiB" in cell and "pgdrill-warn" in cell
    assert "pgdrill-miss" not in cell


def test_data_age_rpo_is_named_and_judged_only_against_a_non_zero_target():
    aged = record("restore-test", "source-repo", rpo_seconds=3600.0, target_rpo_seconds=86400.0, rpo_basis="data age",
                  lost_commits=None)  # fmt: skip
    assert cells_text("".join(row_cells(aged)))[3] == "data age 1 h 00 min / 24 h 00 min"
    gate = {**aged, "scenario": "predeploy-rollback", "target_rpo_seconds": 0.0}
    cell = "".join(row_cells(gate))
    assert "not judged: the target is about lost commits" in cell and "pgdrill-miss" not in cell


def test_a_skipped_case_does_not_hide_the_cases_that_ran():
    rows = summary_rows([record(case="drop-table"), record(case="on-image", verdict="skip", reason="no image")])
    assert rows[0]["verdict"] == "pass" and rows[0]["why"] == "" and rows[0]["skipped"] == "[on-image] no image"
    html = render_summary([record(case="drop-table"), record(case="on-image", verdict="skip", reason="no image")],
                          run_id="r1")  # fmt: skip
    assert '<tr class="pgdrill-row-pass">' in html and "skipped: [on-image] no image" in html
