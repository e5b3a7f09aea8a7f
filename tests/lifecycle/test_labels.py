"""Per-purpose retention (--label, [retention.labels]) and schema-only / data-only logical backups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup_tools.errors import UsageError
from backup_tools.lifecycle.retention import RetentionPolicy, plan_retention
from tests.lifecycle.test_retention import deleted_ids, kept_ids, rec, wal_names
from tests.support.logical_env import *  # noqa: F403  (fixtures: server, source, target, repo)
from tests.support.logical_env import new_db

MiB = 1024 * 1024
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def policy(**labels: object) -> RetentionPolicy:
    return RetentionPolicy.from_config({"daily": 2, "weekly": 0, "monthly": 0, "yearly": 0, "labels": labels})


def test_label_rules_keep_by_count_and_by_age_and_gfs_counts_only_unlabelled() -> None:
    records = [rec(f"u{i}", NOW - timedelta(days=10 - i), kind="logical") for i in range(4)]  # unlabelled: GFS
    records += [rec(f"pre{age}", NOW - timedelta(days=age, hours=1), kind="logical", label="predeploy")
                for age in (45, 29, 3)]  # fmt: skip
    records += [rec(f"day{i}", NOW - timedelta(hours=10 - i), kind="logical", label="daily") for i in range(4)]
    plan = plan_retention(records, policy(predeploy="30d", daily=2), now=NOW)
    assert kept_ids(plan) == {"u2", "u3", "pre29", "pre3", "day2", "day3"}
    assert deleted_ids(plan) == {"u0", "u1", "pre45", "day0", "day1"}
    assert plan.decision("pre29").reason == "label predeploy: younger than 30d"
    assert plan.decision("day3").reason.startswith("label daily: one of the newest 2")
    assert "label predeploy = 30d" in str(plan.policy)


def test_a_kept_labelled_incremental_keeps_its_parents_and_their_wal() -> None:
    t = NOW - timedelta(days=60)
    records = [
        rec("full", t, lsn=2 * 16 * MiB + 40, wal_segment_size=16 * MiB),
        rec(
            "inc",
            t + timedelta(days=1),
            kind="incremental",
            parent="full",
            lsn=5 * 16 * MiB + 40,
            label="predeploy",
            wal_segment_size=16 * MiB,
        ),
        rec("newer", NOW - timedelta(days=2), lsn=9 * 16 * MiB + 40, wal_segment_size=16 * MiB),
        rec("newest", NOW - timedelta(days=1), lsn=10 * 16 * MiB + 40, wal_segment_size=16 * MiB),
    ]  # fmt: skip  (GFS daily = 2 keeps newer and newest; full stays only as inc's parent)
    plan = plan_retention(records, policy(predeploy="90d"), now=NOW, wal=wal_names(1, range(0, 11)))
    assert kept_ids(plan) == {"full", "inc", "newer", "newest"}
    assert plan.decision("full").reason == "parent of incremental inc"
    assert plan.wal_delete == ("wal/000000010000000000000000", "wal/000000010000000000000001")
    shorter = plan_retention(records, policy(predeploy="30d"), now=NOW, wal=wal_names(1, range(0, 11)))
    assert deleted_ids(shorter) == {"full", "inc"} and len(shorter.wal_delete) == 9


def test_a_label_with_no_rule_is_an_error_and_bad_rules_are_refused() -> None:
    records = [rec("a", NOW, kind="logical", label="predeploy"), rec("b", NOW, kind="logical", label="adhoc")]
    with pytest.raises(UsageError, match=r"labelled adhoc but the retention config has no rule for it.*nothing was"):
        plan_retention(records, policy(predeploy="30d"), now=NOW)
    for bad, message in (("-1d", "invalid duration"), (True, "use a number of backups"), ("0s", "must be positive")):
        with pytest.raises(UsageError, match=message):
            policy(predeploy=bad)
    with pytest.raises(UsageError, match="retention labels must be a table"):
        RetentionPolicy.from_config({"labels": 7})


@pytest.mark.integration
def test_cli_labelled_schema_only_and_data_only_backups_restore_and_prune(source, server, repo, tmp_path, capsys):
    from backup_tools.cli.main import main

    def backup(*extra: str) -> str:
        assert main(["backup", "--dsn", source.dsn, "--repo", repo.url, "--kind", "logical", *extra]) == 0
        return capsys.readouterr().out.strip().splitlines()[-1]

    schema = backup("--schema-only", "--label", "predeploy")
    data_old, data = backup("--data-only", "--label", "daily"), backup("--data-only", "--label", "daily")
    assert repo.read_catalog(schema).options["label"] == "predeploy"
    assert repo.read_catalog(data).options["data_only"] is True

    target = new_db(server, seeded=False)
    assert main(["restore", "--repo", repo.url, "--dsn", target.dsn, "--backup", schema]) == 0
    assert target.tables() == source.tables()
    assert all(target.scalar(f'SELECT count(*) FROM "{t}"') == 0 for t in target.tables())
    assert main(["restore", "--repo", repo.url, "--dsn", target.dsn, "--backup", data]) == 0
    assert target.fingerprint() == source.fingerprint()

    config = tmp_path / "retention.toml"
    config.write_text('[retention]\ndaily = 7\n[retention.labels]\npredeploy = "30d"\n')
    capsys.readouterr()
    assert main(["prune", "--repo", repo.url, "--config", str(config)]) == 2
    assert "labelled daily but the retention config has no rule" in capsys.readouterr().err
    assert {r.id for r in repo.list_backups()} == {schema, data_old, data}
    config.write_text('[retention]\ndaily = 7\n[retention.labels]\npredeploy = "30d"\ndaily = 1\n')
    assert main(["prune", "--repo", repo.url, "--config", str(config)]) == 0
    assert {r.id for r in repo.list_backups()} == {schema, data}
    assert main(["backup", "--dsn", source.dsn, "--repo", repo.url, "--kind", "full", "--schema-only"]) == 2
    with pytest.raises(SystemExit, match="2"):
        main(["backup", "--dsn", source.dsn, "--repo", repo.url, "--kind", "logical", "--label", "Pre Deploy"])
