"""storage-policy on moto's S3 server: lifecycle rules written and read back, tier tags, drift after a hand edit."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from backup_tools.catalog import FileEntry
from tests.lifecycle.test_retention import rec
from tests.support.repo_ops import run_cli

pytestmark = pytest.mark.integration

CONFIG = """[retention]
daily = 1
weekly = 0
monthly = 3
yearly = 1
[retention.tiers]
monthly = 30
yearly = { after_days = 365, storage_class = "DEEP_ARCHIVE" }
"""
TEAM_RULE = {"ID": "team-expire-tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 3}}


def month_back(now: datetime, k: int) -> datetime:
    year, month = divmod(now.year * 12 + now.month - 1 - k, 12)
    return datetime(year, month + 1, 15, 3, tzinfo=UTC)


def store(repo, backup_id: str, when: datetime) -> None:
    data = f"data of {backup_id}".encode()
    repo.put_bytes(f"backups/{backup_id}/base.tar", data)
    repo.put_bytes(f"backups/{backup_id}/backup_manifest", b"{}")
    files = (FileEntry("base.tar", len(data), hashlib.sha256(data).hexdigest()), FileEntry("backup_manifest", 2, "x"))
    repo.write_catalog(rec(backup_id, when).with_changes(files=files))


def test_apply_writes_rules_and_tags_and_check_reports_a_rule_removed_by_hand(s3, s3_prefix, tmp_path):
    region = s3.regions[0]
    repo, client, env = s3.repository(region, s3_prefix), s3.client(region), s3.env(region)
    url, bucket = s3.repo_url(region, s3_prefix), s3.bucket(region)
    now = datetime.now(UTC)
    for k in range(1, 6):  # the 15th of each of the last five months: calendar months, whatever today is
        store(repo, f"b{k}", month_back(now, k))
    tagged_before = f"{s3_prefix}/backups/b2/base.tar"
    client.put_object_tagging(Bucket=bucket, Key=tagged_before, Tagging={"TagSet": [{"Key": "sha256", "Value": "x"}]})
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [TEAM_RULE]})
    config = tmp_path / "retention.toml"
    config.write_text(CONFIG)
    policy = ["storage-policy", "--repo", url, "--config", str(config)]

    first = run_cli(*policy, "--check", env=env)
    assert first.returncode == 1, first.stderr
    assert f"DRIFT rule pgdrill-monthly:{s3_prefix}: GLACIER after 30 days: missing" in first.stdout
    assert "DRIFT 3 object(s) of monthly/yearly backups lack their pgdrill-tier tag" in first.stdout
    assert run_cli(*policy, "--apply", env=env).returncode == 0
    again = run_cli(*policy, "--check", env=env)
    assert again.returncode == 0 and "DRIFT" not in again.stdout, again.stdout + again.stderr

    rules = {r["ID"]: r for r in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert set(rules) == {"team-expire-tmp", f"pgdrill-monthly:{s3_prefix}", f"pgdrill-yearly:{s3_prefix}"}
    yearly = rules[f"pgdrill-yearly:{s3_prefix}"]
    assert yearly["Transitions"] == [{"Days": 365, "StorageClass": "DEEP_ARCHIVE"}]
    assert yearly["Filter"]["And"]["Prefix"] == f"{s3_prefix}/backups/"

    def tags(key: str) -> dict[str, str]:
        got = client.get_object_tagging(Bucket=bucket, Key=f"{s3_prefix}/backups/{key}")["TagSet"]
        return {t["Key"]: t["Value"] for t in got}

    assert tags("b1/base.tar") == {"pgdrill-tier": "yearly"}  # the newest: monthly and yearly, the deeper wins
    assert tags("b2/base.tar") == {"sha256": "x", "pgdrill-tier": "monthly"}  # the existing tag survives
    assert tags("b3/base.tar") == {"pgdrill-tier": "monthly"}
    assert tags("b4/base.tar") == {} and tags("b1/backup_manifest") == {} and tags("b1/catalog.json") == {}

    # someone removes the monthly rule and lengthens the yearly one by hand
    edited = dict(yearly, Transitions=[{"Days": 700, "StorageClass": "DEEP_ARCHIVE"}])
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [TEAM_RULE, edited]})
    drift = run_cli(*policy, "--check", env=env)
    assert drift.returncode == 1
    assert f"DRIFT rule pgdrill-monthly:{s3_prefix}: GLACIER after 30 days: missing (removed by hand?)" in drift.stdout
    assert "DEEP_ARCHIVE after 365 days: differs in the bucket (Enabled, " in drift.stdout
    assert "DEEP_ARCHIVE after 700 days" in drift.stdout
    assert run_cli(*policy, "--apply", env=env).returncode == 0
    assert run_cli(*policy, "--check", env=env).returncode == 0
    assert len(client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]) == 3


def test_bad_tier_config_and_a_file_repository_are_usage_errors(s3, s3_prefix, tmp_path):
    config = tmp_path / "retention.toml"
    config.write_text(
        "[retention]\ndaily = 7\n[retention.tiers]\nmonthly = { after_days = 30, storage_class = 'TAPE' }\n"
    )
    env = s3.env(s3.regions[0])
    bad = run_cli("storage-policy", "--repo", s3.repo_url(s3.regions[0], s3_prefix), "--config", str(config),
                  "--check", env=env)  # fmt: skip
    assert bad.returncode == 2 and "storage_class 'TAPE'" in bad.stderr
    (tmp_path / "repo").mkdir()
    local = run_cli("storage-policy", "--repo", f"file://{tmp_path / 'repo'}", "--config", str(config), "--check")
    assert local.returncode == 2 and "is not an s3:// repository" in local.stderr
