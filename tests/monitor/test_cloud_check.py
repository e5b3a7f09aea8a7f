"""cloud-check against moto's RDS (server mode): compliant and non-compliant instances, an Aurora cluster, overrides."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from tests.monitor.test_alerts import WebhookServer
from tests.support.repo_ops import run_cli

pytestmark = pytest.mark.integration

CONFIG = """[cloud]
provider = "aws-rds"
regions = ["{region}"]
include = ["{tag}-*"]
[cloud.expect]
retention_days = 7
pitr = true
backup_window = "01:00-04:00"
encrypted = true
deletion_protection = true
[cloud.resources.{tag}-analytics]
retention_days = 30
"""


@pytest.fixture
def rds(s3, s3_prefix):
    """An RDS client on the moto server and a tag unique to the test (moto's RDS state is shared by the session)."""
    import boto3

    region = s3.regions[0]
    env = s3.env(region)
    client = boto3.client("rds", region_name=region, endpoint_url=s3.endpoint,
                          aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", "testing"),
                          aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", "testing"))  # fmt: skip
    tag = "t" + s3_prefix.rsplit("-", 1)[-1][:8]
    return client, region, env, tag


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    """A real local HTTP receiver recording every POST (the one the alert tests use)."""
    server = WebhookServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def instance(client, name: str, **settings) -> None:
    client.create_db_instance(DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.t3.micro",
                              AllocatedStorage=20, MasterUsername="app", MasterUserPassword="not-a-secret-1",
                              **settings)  # fmt: skip


def test_compliant_and_out_of_policy_instances_and_an_aurora_cluster(rds, tmp_path):
    client, region, env, tag = rds
    good = {"BackupRetentionPeriod": 14, "PreferredBackupWindow": "02:00-02:30", "StorageEncrypted": True,
            "DeletionProtection": True}  # fmt: skip
    instance(client, f"{tag}-orders", **good)
    instance(client, f"{tag}-analytics", **good)  # 14 days, but its override asks 30
    instance(client, f"{tag}-legacy", BackupRetentionPeriod=1, PreferredBackupWindow="13:00-13:30",
             StorageEncrypted=False, DeletionProtection=False)  # fmt: skip
    client.create_db_cluster(DBClusterIdentifier=f"{tag}-aurora", Engine="aurora-postgresql", MasterUsername="app",
                             MasterUserPassword="not-a-secret-1", BackupRetentionPeriod=0,
                             PreferredBackupWindow="03:00-03:30", StorageEncrypted=True, DeletionProtection=True)  # fmt: skip
    instance(client, "someone-elses-db", BackupRetentionPeriod=0)  # not matched by include
    config = tmp_path / "cloud.toml"
    config.write_text(CONFIG.format(region=region, tag=tag))

    done = run_cli("cloud-check", "--config", str(config), env=env)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert (
        f"OK       {region}/instance {tag}-orders retention: automated backups kept 14 d (at least 7 d expected)"
        in lines
    )
    assert not [x for x in lines if f"{tag}-orders" in x and not x.startswith("OK")]
    assert (
        f"CRITICAL {region}/instance {tag}-analytics retention: automated backups kept 14 d (at least 30 d expected)"
        in lines
    )
    legacy = {
        x.split(f"{tag}-legacy ", 1)[1].split(":")[0]
        for x in lines
        if x.startswith("CRITICAL") and f"{tag}-legacy" in x
    }
    assert legacy == {"retention", "backup window", "encryption", "deletion protection"}
    assert (
        f"CRITICAL {region}/instance {tag}-legacy backup window: 13:00-13:30 UTC, outside the allowed 01:00-04:00"
        in lines
    )
    assert f"CRITICAL {region}/cluster {tag}-aurora pitr: point-in-time restore off (retention 0), expected on" in lines
    assert "someone-elses-db" not in done.stdout

    doc = json.loads(run_cli("cloud-check", "--config", str(config), "--json", env=env).stdout)
    assert doc["ok"] is False and {f["resource"] for f in doc["findings"] if f["ok"] is False} == {
        f"{region}/instance {tag}-analytics", f"{region}/instance {tag}-legacy", f"{region}/cluster {tag}-aurora"}  # fmt: skip

    config.write_text(CONFIG.format(region=region, tag=f"{tag}-orders").replace("[cloud.resources", "[unused"))
    assert run_cli("cloud-check", "--config", str(config), env=env).returncode == 0


def test_replication_required_is_reported_and_other_providers_are_refused(rds, tmp_path):
    client, region, env, tag = rds
    instance(client, f"{tag}-solo", BackupRetentionPeriod=7)
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'[cloud]\nregions = ["{region}"]\ninclude = ["{tag}-*"]\n[cloud.expect]\ncross_region_replication = true\n'
    )
    done = run_cli("cloud-check", "--config", str(config), env=env)
    assert done.returncode == 1
    assert "cross-region: no cross-region automated-backup replication, expected on" in done.stdout
    config.write_text('[cloud]\nprovider = "gcp-cloudsql"\nregions = ["europe-west1"]\n')
    refused = run_cli("cloud-check", "--config", str(config), env=env)
    assert refused.returncode == 2 and "cloud provider 'gcp-cloudsql' is not supported: only aws-rds" in refused.stderr
    config.write_text(f'[cloud]\nregions = ["{region}"]\n[cloud.expect]\nretention_days = 90\n')
    assert "RDS keeps automated backups 0..35 days" in run_cli("cloud-check", "--config", str(config), env=env).stderr


def test_out_of_policy_settings_alert_the_configured_webhook(rds, webhook, tmp_path):
    client, region, env, tag = rds
    instance(client, f"{tag}-orders", BackupRetentionPeriod=14, PreferredBackupWindow="02:00-02:30",
             StorageEncrypted=True, DeletionProtection=True)  # fmt: skip
    instance(client, f"{tag}-legacy", BackupRetentionPeriod=1, PreferredBackupWindow="02:00-02:30",
             StorageEncrypted=True, DeletionProtection=True)  # fmt: skip
    config = tmp_path / "cloud.toml"
    receiver = f'[monitor.webhook]\nurl = "{webhook.url}"\nretries = 0\n'
    config.write_text(CONFIG.format(region=region, tag=tag).split("[cloud.resources")[0] + receiver)

    done = run_cli("cloud-check", "--config", str(config), env=env)
    assert done.returncode == 1, done.stderr
    assert f"alert sent to webhook http://127.0.0.1:{webhook.server_address[1]}/…" in done.stderr
    (doc,) = webhook.json()
    assert doc["pgdrill"]["event"] == "failed" and doc["pgdrill"]["repo"] == f"aws-rds {region}"
    assert [c["name"] for c in doc["pgdrill"]["checks"]] == [f"{region}/instance {tag}-legacy retention"]
    assert "automated backups kept 1 d (at least 7 d expected)" in doc["text"]
    assert f"backup-tools cloud-check --config {config}" in doc["text"] and "Xtoken42secret" not in doc["text"]

    assert run_cli("cloud-check", "--config", str(config), "--no-alerts", env=env).returncode == 1
    client.modify_db_instance(DBInstanceIdentifier=f"{tag}-legacy", BackupRetentionPeriod=7, ApplyImmediately=True)
    assert run_cli("cloud-check", "--config", str(config), env=env).returncode == 0
    assert len(webhook.requests) == 1  # neither --no-alerts nor an in-policy run sent anything

    webhook.statuses = [404]  # a receiver that refuses: the findings stand, the exit code says delivery failed
    client.modify_db_instance(DBInstanceIdentifier=f"{tag}-legacy", DeletionProtection=False, ApplyImmediately=True)
    refused = run_cli("cloud-check", "--config", str(config), "--json", env=env)
    assert refused.returncode == 1 and "alert delivery to webhook" in refused.stderr
    assert json.loads(refused.stdout)["alerts"][0]["ok"] is False
