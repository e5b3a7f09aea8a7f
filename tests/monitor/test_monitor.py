"""Monitor checks over repository histories written into a FileRepository: each check passes and fails on cue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from backup_tools.cli.main import main
from backup_tools.errors import UsageError
from backup_tools.monitor.checks import CheckOutcome, run_checks
from backup_tools.monitor.config import MonitorConfig
from backup_tools.repo.base import FileRepository
from tests.support.monitor_env import MB, RepoHistory

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def history(tmp_path) -> RepoHistory:
    return RepoHistory(tmp_path / "repo", NOW)


def daily_logical(history: RepoHistory, *, days: int = 8, newest_hours_ago: float = 2, size: int = 50 * MB) -> None:
    """A week of nightly logical dumps of about the same size, the newest newest_hours_ago."""
    tested = (history.now - timedelta(hours=30)).isoformat()
    for day in range(days, 0, -1):
        history.backup(hours_ago=newest_hours_ago + 24 * day, size=size + day * 1000, verified_hours_ago=30,
                       restore_tested_at=tested)  # fmt: skip
    history.backup(hours_ago=newest_hours_ago, size=size)


def check(history: RepoHistory, config: MonitorConfig | None = None, **changes) -> dict[str, CheckOutcome]:
    config = (config or MonitorConfig(capacity_warn_percent=100, capacity_critical_percent=100)).with_changes(**changes)
    results = run_checks(history.repo, config, now=NOW)
    names = [r.name for r in results]
    assert len(names) == len(set(names)), f"check names must be unique: {names}"
    return {r.name: r for r in results}


def failed(results: dict[str, CheckOutcome]) -> list[str]:
    return sorted(name for name, r in results.items() if not r.ok)


def test_fresh_healthy_repository_passes_every_check(history):
    daily_logical(history)
    history.backup(hours_ago=30, kind="full", segment=2, verified_hours_ago=20)
    history.backup(hours_ago=3, kind="incremental", segment=5)
    history.wal(2, 3, 4, 5, 6, hours_ago=0.2)
    results = check(history)
    assert failed(results) == []
    assert set(results) == {"freshness:logical", "freshness:physical", "failures:logical", "failures:physical",
                            "stuck", "size:logical", "size:full", "wal:continuity", "wal:archiving", "verified:logical",
                            "verified:physical", "restore_tested:logical", "restore_tested:physical", "capacity", "encryption", "wal:objects"}  # fmt: skip
    assert results["freshness:logical"].figures["age_seconds"] == pytest.approx(2 * 3600 - 300)
    assert all(r.severity == "ok" and r.line().startswith("OK ") for r in results.values())


def test_newest_backup_26_hours_old_fails_freshness(history):
    daily_logical(history, newest_hours_ago=26)
    results = check(history, max_age=timedelta(hours=25))
    assert failed(results) == ["freshness:logical"]
    r = results["freshness:logical"]
    assert r.severity == "critical" and "limit 25 h 00 min" in r.message and "schedule" in r.message
    assert r.figures["age_seconds"] == pytest.approx(26 * 3600 - 300)
    assert check(history, max_age=timedelta(hours=27))["freshness:logical"].ok


def test_freshness_per_series_and_kind(history):
    history.backup(hours_ago=6 * 24, kind="full", segment=2, verified_hours_ago=1)
    history.backup(hours_ago=3, kind="incremental", segment=3)
    history.wal(2, 3, 4, hours_ago=0.1)
    weekly = {"physical": timedelta(hours=26), "full": timedelta(days=8)}
    assert failed(check(history, max_age_by_series=weekly)) == []
    strict = {"physical": timedelta(hours=26), "full": timedelta(days=5), "logical": timedelta(hours=26)}
    results = check(history, max_age_by_series=strict)
    assert failed(results) == ["freshness:full", "freshness:logical"]
    assert "no finished logical backup" in results["freshness:logical"].message


def test_empty_repository_fails(history):
    results = check(history)
    assert failed(results) == ["freshness"] and "take one" in results["freshness"].message


def test_newest_dump_ten_times_smaller_is_a_size_anomaly(history):
    daily_logical(history, size=50 * MB)
    history.backup(hours_ago=1, size=5 * MB)
    results = check(history)
    assert failed(results) == ["size:logical"]
    r = results["size:logical"]
    assert r.severity == "critical" and "empty or partial dump" in r.message
    assert r.figures["ratio"] == pytest.approx(0.1, rel=0.01) and r.figures["history"] == 7


def test_size_too_large_is_a_warning_and_usual_sizes_pass(history):
    daily_logical(history, size=50 * MB)
    assert check(history)["size:logical"].ok
    history.backup(hours_ago=1, size=160 * MB)
    r = check(history)["size:logical"]
    assert not r.ok and r.severity == "warning" and "3.2x" in r.message
    assert check(history, size_max_ratio=4.0)["size:logical"].ok


def test_size_needs_history_and_empty_backup_always_fails(history):
    history.backup(hours_ago=30, size=50 * MB)
    history.backup(hours_ago=2, size=1 * MB)
    r = check(history)["size:logical"]
    assert r.ok and "too little history" in r.message
    history.backup(hours_ago=1, size=0)
    r = check(history)["size:logical"]
    assert not r.ok and "0 bytes" in r.message


def test_incremental_sizes_are_not_compared_by_default(history):
    history.backup(hours_ago=100, kind="full", segment=2, verified_hours_ago=1)
    for i, hours in enumerate((80, 60, 40, 20)):
        history.backup(hours_ago=hours, kind="incremental", segment=3 + i, size=40 * MB)
    history.backup(hours_ago=2, kind="incremental", segment=7, size=1 * MB)
    history.wal(*range(2, 9), hours_ago=0.1)
    assert "size:incremental" not in check(history)
    assert not check(history, size_kinds=("incremental",))["size:incremental"].ok


def test_three_failed_newest_backups_alert(history):
    daily_logical(history, newest_hours_ago=20)
    for hours in (14, 8, 2):
        history.backup(hours_ago=hours, status="FAILED", error="pg_dump: error: connection to server failed")
    results = check(history)
    assert failed(results) == ["failures:logical"]
    r = results["failures:logical"]
    assert r.figures["consecutive_failed"] == 3
    assert "newest 3 logical backup(s) FAILED" in r.message and "connection to server failed" in r.message
    assert check(history, failed_after=4)["failures:logical"].ok


def test_failures_are_per_series_and_ignore_backups_being_pruned(history):
    daily_logical(history)
    history.backup(hours_ago=20, kind="full", segment=2, verified_hours_ago=1)
    history.backup(hours_ago=1, kind="full", status="FAILED", segment=4)
    history.wal(2, 3, hours_ago=0.1)
    assert failed(check(history)) == ["failures:physical"]
    history.backup(hours_ago=0.5, status="FAILED", deleting=True)  # prune marks what it deletes FAILED
    assert check(history)["failures:logical"].ok


def test_backup_started_long_ago_is_stuck(history):
    daily_logical(history)
    history.backup(hours_ago=1, status="STARTED")
    results = check(history)
    assert failed(results) == [] and results["failures:logical"].figures["consecutive_failed"] == 0
    stuck = history.backup(hours_ago=7, status="STARTED")
    r = check(history)["stuck"]
    assert not r.ok and r.severity == "warning" and r.figures["stuck"] == [stuck.id]


def test_wal_gap_after_the_oldest_backup_alerts(history):
    history.backup(hours_ago=20, kind="full", segment=2, verified_hours_ago=1)
    history.wal(2, 3, 5, 6, hours_ago=0.1)
    results = check(history)
    assert failed(results) == ["wal:continuity"]
    r = results["wal:continuity"]
    assert "GAP on timeline 1: 000000010000000000000004 .. 000000010000000000000004 (1 segment(s))" in r.message
    assert r.figures["gaps"][0]["count"] == 1


def test_wal_gap_before_the_oldest_kept_backup_is_ignored(history):
    history.backup(hours_ago=20, kind="full", segment=5, verified_hours_ago=1)
    history.wal(1, 3, 5, 6, hours_ago=0.1)  # 2 and 4 were pruned with older backups
    r = check(history)["wal:continuity"]
    assert r.ok and r.figures["gaps_before_oldest_backup"] == 2


def test_backup_whose_own_wal_is_missing_alerts(history):
    history.backup(hours_ago=20, kind="full", segment=2, verified_hours_ago=1)
    history.backup(hours_ago=2, kind="incremental", segment=9)
    history.wal(2, 3, 4, hours_ago=0.1)
    r = check(history)["wal:continuity"]
    assert not r.ok and "lacks its own WAL 000000010000000000000009" in r.message


def test_stalled_archiving_alerts(history):
    history.backup(hours_ago=5, kind="full", segment=2, verified_hours_ago=1)
    history.wal(2, 3, hours_ago=4.5)
    history.wal(4, hours_ago=3)
    results = check(history)
    assert failed(results) == ["wal:archiving"]
    r = results["wal:archiving"]
    assert "archiving stalled" in r.message and "000000010000000000000004" in r.message
    assert r.figures["age_seconds"] == pytest.approx(3 * 3600)
    assert check(history, wal_max_age=timedelta(hours=4))["wal:archiving"].ok


def test_physical_backups_without_any_archived_wal_alert(history):
    history.backup(hours_ago=5, kind="full", segment=2, verified_hours_ago=1)
    results = check(history)
    assert failed(results) == ["wal:archiving", "wal:continuity"]
    assert "archive_command" in results["wal:archiving"].message


def test_unverified_backups_alert_after_the_grace_period(history):
    history.backup(hours_ago=24 * 3)
    history.backup(hours_ago=2)
    r = check(history)["verified:logical"]
    assert r.ok and "not verified yet" in r.message
    r = check(history, verify_max_age=timedelta(days=2))["verified:logical"]
    assert not r.ok and r.severity == "warning" and "never verified" in r.message
    history.backup(hours_ago=1, verified_hours_ago=0.5)
    assert check(history, verify_max_age=timedelta(days=2))["verified:logical"].ok


def drill_line(
    scenario: str,
    *,
    days_ago: float,
    verdict: str = "pass",
    location: str | None = None,
    family: str = "recovery",
    reason: str | None = None,
) -> str:
    when = NOW - timedelta(days=days_ago)
    source = {"kind": "pgdrill-repo", "location": location, "backup": "b1", "created_at": None} if location else None
    return json.dumps({"history_version": 1, "scenario": scenario, "method": "source-repo", "verdict": verdict,
                       "finished_at": when.isoformat(), "family": family, "reason": reason,
                       "data_source": "team-backup" if location else "synthetic", "source": source})  # fmt: skip


def test_synthetic_drills_never_satisfy_the_restore_test_of_this_repository(history, tmp_path):
    daily_logical(history)
    path = tmp_path / "history.jsonl"
    other = "file:///srv/other-repo"
    path.write_text("\n".join([drill_line("restore-test", days_ago=1), drill_line("corruption", days_ago=1),
                               drill_line("restore-test", days_ago=1, location=other), "not json"]) + "\n")  # fmt: skip
    assert "drills" not in check(history)  # not configured: not checked
    r = check(history, drill_history=path)["drills"]
    assert not r.ok and "no passing restore test of this repository" in r.message
    assert "2 passing drill(s) on synthetic data do not count" in r.message
    with path.open("a") as f:  # a passing restore test of this very repository
        f.write(drill_line("restore-test", days_ago=2, location=history.url + "/") + "\n")
    r = check(history, drill_history=path)["drills"]
    assert r.ok and "passed 2 d 0 h ago" in r.message
    assert not check(history, drill_history=path, drill_max_age=timedelta(days=1))["drills"].ok
    with path.open("a") as f:  # then the real restore test fails: critical, whatever passed before
        f.write(drill_line("restore-test", days_ago=0.5, location=history.url, verdict="fail",
                           reason="backup-tools restore: FATAL: role app_owner does not exist") + "\n")  # fmt: skip
    r = check(history, drill_history=path)["drills"]
    assert r.severity == "critical" and "FAILED" in r.message and "role app_owner does not exist" in r.message


def test_missing_drill_history_alerts(history, tmp_path):
    daily_logical(history)
    r = check(history, drill_history=tmp_path / "nowhere.jsonl")["drills"]
    assert not r.ok and "no passing restore test" in r.message


def test_checksum_verify_and_restore_test_are_reported_apart_with_their_own_limits(history):
    history.backup(hours_ago=20 * 24, verified_hours_ago=1)
    history.backup(hours_ago=1, verified_hours_ago=0.5)
    results = check(history)
    assert results["verified:logical"].ok
    r = results["restore_tested:logical"]
    assert not r.ok and "never restore-tested (a checksum verify is not one)" in r.message
    history.backup(hours_ago=0.5, restore_tested_at=(NOW - timedelta(days=3)).isoformat())
    assert check(history)["restore_tested:logical"].ok
    assert not check(history, restore_test_max_age=timedelta(days=2))["restore_tested:logical"].ok


def test_bucket_backup_freshness(history, tmp_path):
    from backup_tools.backup.files import backup_bucket
    from backup_tools.repo.buckets import DirectoryBucket

    daily_logical(history)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.pdf").write_bytes(b"%PDF-1.7 a")
    backup_bucket(DirectoryBucket(docs), history.repo, name="documents")
    r = check(history, bucket_max_age=timedelta(hours=1))["freshness:bucket:documents"]
    assert r.ok and r.figures["documents"] == 1
    later = datetime.now(UTC) + timedelta(hours=3)  # the same backup seen three hours on
    results = {c.name: c for c in run_checks(history.repo, MonitorConfig(bucket_max_age=timedelta(hours=1)), now=later)}
    r = results["freshness:bucket:documents"]
    assert not r.ok and r.severity == "critical" and "limit 1 h 00 min" in r.message


def test_capacity_of_a_file_repository_warns_and_alerts_on_its_filesystem(history):
    import shutil

    daily_logical(history)
    usage = shutil.disk_usage(history.repo.root)
    percent = 100 * usage.used / (usage.used + usage.free)  # as df counts it (blocks reserved for root left out)
    r = check(history, capacity_warn_percent=percent + 5, capacity_critical_percent=percent + 6)["capacity"]
    assert r.ok and f"({percent:.0f}%)" in r.message
    r = check(history, capacity_warn_percent=max(percent - 5, 0), capacity_critical_percent=percent + 6)["capacity"]
    assert not r.ok and r.severity == "warning"
    r = check(history, capacity_warn_percent=max(percent - 6, 0), capacity_critical_percent=max(percent - 5, 0))
    assert r["capacity"].severity == "critical" and "prune or grow it" in r["capacity"].message


def test_capacity_settings_parse():
    config = MonitorConfig.from_mapping({"s3_quota": "2GiB", "capacity_warn_percent": 70, "restore_test_max_age": "3d"})
    assert config.s3_quota_bytes == 2 << 30 and config.capacity_warn_percent == 70
    assert config.restore_test_max_age == timedelta(days=3)
    with pytest.raises(UsageError, match="s3_quota"):
        MonitorConfig.from_mapping({"s3_quota": "lots"})


def test_unreadable_repository_is_a_failed_check(tmp_path):
    results = run_checks(FileRepository(tmp_path / "gone"), MonitorConfig(), now=NOW)
    assert [(r.name, r.ok, r.severity) for r in results] == [("repository", False, "critical")]
    assert "does not exist" in results[0].message


def test_config_from_pyproject_section(tmp_path):
    path = tmp_path / "conf" / "pgdrill.toml"
    path.parent.mkdir()
    path.write_text("""
[tool.pgdrill.monitor]
max_age = { physical = "26h", full = "8d" }
failed_after = 2
stuck_after = "3h"
size_kinds = ["logical"]
size_min_ratio = 0.8
wal_max_age = "15min"
verify_max_age = "31d"
drill_history = "history.jsonl"
drill_max_age = "90d"
drill_scenarios = ["corruption"]
[tool.pgdrill.monitor.webhook]
url = "http://127.0.0.1:9/hook"
""")
    config = MonitorConfig.load(path)
    assert config.max_age_by_series == {"physical": timedelta(hours=26), "full": timedelta(days=8)}
    assert (config.failed_after, config.stuck_after, config.size_kinds) == (2, timedelta(hours=3), ("logical",))
    assert (config.size_min_ratio, config.wal_max_age) == (0.8, timedelta(minutes=15))
    assert config.drill_history == path.parent / "history.jsonl"
    assert config.drill_scenarios == ("corruption",) and config.drill_max_age == timedelta(days=90)
    assert config.receivers == {"webhook": {"url": "http://127.0.0.1:9/hook"}}
    assert MonitorConfig.load(None) == MonitorConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('[tool.pgdrill.monitor]\nmax_ag = "1h"\n', "unknown key(s) max_ag", id="typo"),
        pytest.param('[tool.pgdrill.monitor]\nmax_age = "soon"\n', "invalid duration", id="duration"),
        pytest.param('[tool.pgdrill.monitor]\nmax_age = "0s"\n', "positive", id="zero"),
        pytest.param("[tool.pgdrill.monitor]\nmax_age = { daily = '1h' }\n", "max_age keys", id="series"),
        pytest.param("[tool.pgdrill.monitor]\nsize_window = 0\n", "whole number", id="window"),
        pytest.param("[tool.pgdrill.monitor]\nsize_kinds = ['dump']\n", "size_kinds", id="kinds"),
        pytest.param("[tool.pgdrill.monitor\n", "not valid TOML", id="toml"),
    ],
)
def test_bad_config_is_a_usage_error(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MonitorConfig.load(path)


def test_top_level_monitor_section_and_missing_file(tmp_path):
    path = tmp_path / "monitor.toml"
    path.write_text('[monitor]\nwal_max_age = "2h"\n')
    assert MonitorConfig.load(path).wal_max_age == timedelta(hours=2)
    with pytest.raises(UsageError, match="cannot read monitor config"):
        MonitorConfig.load(tmp_path / "absent.toml")


def test_cli_prints_one_line_per_check_and_exit_codes(tmp_path, capsys):
    now = datetime.now(UTC)
    live = RepoHistory(tmp_path / "repo", now)
    daily_logical(live)
    roomy = tmp_path / "roomy.toml"  # this host's disk fill is not what the test is about
    roomy.write_text("[tool.pgdrill.monitor]\ncapacity_warn_percent = 100\ncapacity_critical_percent = 100\n")
    assert main(["check", "--repo", live.url, "--config", str(roomy)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["freshness:logical:", "failures:logical:", "stuck:", "size:logical:",
                                                   "verified:logical:", "restore_tested:logical:", "capacity:", "encryption:"]  # fmt: skip
    assert all(line.startswith("OK ") for line in lines)
    assert main(["check", "--repo", live.url, "--config", str(roomy), "--max-age", "1h", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["alerts"] == []
    assert [c["name"] for c in doc["checks"] if not c["ok"]] == ["freshness:logical"]
    config = tmp_path / "c.toml"
    config.write_text(
        '[tool.pgdrill.monitor]\nmax_age = "1h"\ncapacity_warn_percent = 100\ncapacity_critical_percent = 100\n'
    )
    assert main(["check", "--repo", live.url, "--config", str(config)]) == 1
    assert "CRITICAL freshness:logical" in capsys.readouterr().out
    assert main(["check", "--repo", live.url, "--config", str(config), "--max-age", "3h"]) == 0  # the flag wins
    capsys.readouterr()
    assert main(["check", "--repo", live.url, "--max-age", "soon"]) == 2
    assert "invalid duration" in capsys.readouterr().err
    assert main(["check", "--repo", live.url, "--config", str(tmp_path / "absent.toml")]) == 2


def test_prometheus_file_is_openmetrics_that_prometheus_client_parses(tmp_path, capsys):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families as parse_prometheus_text

    now = datetime.now(UTC)
    live = RepoHistory(tmp_path / "repo", now)
    daily_logical(live)
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join([
        json.dumps({"scenario": "restore-test", "method": "source-repo", "verdict": "pass", "rto_seconds": 12.5,
                    "rpo_seconds": 3600.0, "finished_at": (now - timedelta(hours=3)).isoformat(),
                    "family": "recovery", "data_source": "team-backup",
                    "source": {"kind": "pgdrill-repo", "location": live.url}}),
        json.dumps({"scenario": "complete-loss", "method": "full", "verdict": "pass", "rto_seconds": None,
                    "finished_at": now.isoformat(), "family": "fault-detection", "data_source": "synthetic"}),
    ]) + "\n")  # fmt: skip
    config = tmp_path / "c.toml"
    config.write_text(f'[tool.pgdrill.monitor]\ndrill_history = "{history}"\ncapacity_warn_percent = 100\n'
                      "capacity_critical_percent = 100\n")  # fmt: skip
    metrics = tmp_path / "textfile" / "pgdrill.prom"
    metrics.parent.mkdir()
    assert main(["check", "--repo", live.url, "--config", str(config), "--prometheus", str(metrics)]) == 0
    capsys.readouterr()
    text = metrics.read_text()
    assert text.endswith("# EOF\n") and oct(metrics.stat().st_mode & 0o777) == "0o644"
    families = {f.name: f for f in parse_openmetrics(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert all(f.type == "gauge" for f in families.values())
    assert families["pgdrill_backup_age_seconds"].unit == "seconds"
    age = samples[("pgdrill_backup_age_seconds", (("repo", live.url), ("series", "logical")))]
    assert age == pytest.approx(2 * 3600 - 300, abs=60)
    assert samples[("pgdrill_check_ok", (("check", "drills"), ("repo", live.url)))] == 1.0
    assert samples[("pgdrill_check_severity", (("check", "freshness:logical"), ("repo", live.url)))] == 0.0
    drill = (("data_source", "team-backup"), ("method", "source-repo"), ("scenario", "restore-test"))
    assert samples[("pgdrill_drill_rto_seconds", drill)] == 12.5 and samples[("pgdrill_drill_passed", drill)] == 1.0
    assert not any(labels and dict(labels).get("scenario") == "complete-loss" for _, labels in samples)
    assert (
        "pgdrill_backup_last_restore_test_timestamp_seconds",
        (("repo", live.url), ("series", "logical")),
    ) in samples
    plain = {s.name for f in parse_prometheus_text(text) for s in f.samples}  # what node_exporter's parser reads
    assert {"pgdrill_check_ok", "pgdrill_backup_size_bytes", "pgdrill_drill_rpo_seconds"} <= plain
    assert main(["check", "--repo", live.url, "--config", str(config), "--max-age", "1h", "--prometheus",
                 str(metrics)]) == 1  # fmt: skip
    failing = {s.labels["check"]: s.value for f in parse_openmetrics(metrics.read_text()) for s in f.samples
               if s.name == "pgdrill_check_severity"}  # fmt: skip
    assert failing["freshness:logical"] == 2.0
    assert main(["check", "--repo", live.url, "--prometheus", str(tmp_path / "no-such-dir" / "x.prom")]) == 2


@pytest.mark.integration
def test_check_wants_a_real_restore_test_of_this_repository_not_synthetic_drills(make_cluster, tmp_path, capsys):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    repo = f"file://{tmp_path / 'repo'}"
    team = make_cluster("team")
    team.init()
    team.start()
    team.safe_sql("CREATE TABLE orders (id int PRIMARY KEY, created_at timestamptz DEFAULT now())")
    team.safe_sql("INSERT INTO orders SELECT g FROM generate_series(1, 500) g")
    backup = [sys.executable, "-m", "backup_tools", "backup", "--dsn", team.dsn, "--repo", repo, "--kind", "logical",
              "--pg-bin", str(team.pg.bindir)]  # fmt: skip
    subprocess.run(backup, check=True, capture_output=True, text=True, timeout=300)
    history = tmp_path / "history.jsonl"
    history.write_text(drill_line("restore-test", days_ago=0.1) + "\n" + drill_line("corruption", days_ago=0.1) + "\n")
    roomy = tmp_path / "roomy.toml"
    roomy.write_text("[tool.pgdrill.monitor]\ncapacity_warn_percent = 100\ncapacity_critical_percent = 100\n")
    args = ["check", "--repo", repo, "--config", str(roomy), "--history-file", str(history)]
    assert main(args) == 1  # only synthetic passes on record: the restore test of this repository is missing
    assert "WARNING  drills: no passing restore test of this repository" in capsys.readouterr().out
    drill = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "drills/test_restore_test.py",
             "-k", "restore_the_teams_backup", "--source-repo", repo, "--history-file", str(history),
             "--report-dir", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(drill, cwd=root, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "on the team's backup" in done.stdout
    assert main(args) == 0
    assert "OK       drills: restore test of this repository passed" in capsys.readouterr().out
