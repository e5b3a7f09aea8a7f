"""Storage tiers and Object Lock on backups (moto over HTTP): GLACIER restores, locked backups, prune, copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from backup_tools.catalog import BackupRecord, FileEntry
from backup_tools.errors import RepositoryError, VersionMismatch
from backup_tools.lifecycle.offsite import copy_backups
from backup_tools.lifecycle.prune import prune
from backup_tools.lifecycle.retention import RetentionPolicy
from backup_tools.repo.base import FileRepository
from tests.lifecycle.test_copy import fake_backup, fake_wal, quiet

ONE_DAY = RetentionPolicy(daily=1, weekly=0, monthly=0, yearly=0)


def cli(*args: str, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess[str]:
    """Run backup-tools as its own process with the S3 endpoint in its environment; check its exit code."""
    done = subprocess.run([sys.executable, "-m", "backup_tools", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})  # fmt: skip
    assert done.returncode == code, f"backup-tools {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done


def heads(s3, bucket: str, prefix: str) -> dict[str, dict]:
    """name -> head_object of every object under prefix."""
    client = s3.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k[len(prefix) + 1 :]: client.head_object(Bucket=bucket, Key=k) for k in keys}


@pytest.mark.integration
def test_glacier_backup_restore_requests_every_object_then_restores(s3, s3_prefix, make_cluster, tmp_path,
                                                                     s3_restore_delay):  # fmt: skip
    url, env = s3.repo_url(s3.primary_region, s3_prefix), s3.env()
    primary = make_cluster("primary", env=env)
    primary.init(has_archiving=True, archive_url=url)
    primary.start()
    primary.safe_sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g")
    full = cli("backup", "--dsn", primary.dsn, "--repo", url, "--kind", "full", "--storage-class", "GLACIER",
               env=env).stdout.strip()  # fmt: skip
    primary.archive_current_wal()
    primary.stop()
    objects = heads(s3, s3.primary_bucket, f"{s3_prefix}/backups/{full}")
    archived = sorted(n for n, h in objects.items() if h.get("StorageClass") == "GLACIER")
    assert archived == ["base.tar.zst"]  # catalog.json and backup_manifest stay STANDARD; the WAL is inside base.tar
    assert json.loads(cli("list", "--repo", url, "--json", env=env).stdout)[0]["options"]["storage_class"] == "GLACIER"

    s3_restore_delay(4)  # restores run 4 s (moto counts from the object's creation: let them age first)
    time.sleep(4.2)
    first = cli("restore", "--repo", url, "--to", str(tmp_path / "r"), env=env, code=1)
    assert "restore requested for all 1 archived object(s) (1 now, 0 already running" in first.stderr
    assert "retry in 5 hours" in first.stderr and not (tmp_path / "r").exists()
    again = cli("restore", "--repo", url, "--to", str(tmp_path / "r"), env=env, code=1)
    assert "(0 now, 1 already running" in again.stderr
    time.sleep(4.5)
    assert cli("restore", "--repo", url, "--to", str(tmp_path / "r"), env=env).stdout.strip() == full
    assert (tmp_path / "r" / "PG_VERSION").exists()


@pytest.mark.integration
def test_locked_backup_cannot_be_deleted_and_prune_skips_it(s3, s3_lock_bucket, make_cluster, tmp_path):
    env = s3.env()
    url = f"s3://{s3_lock_bucket}/db"
    primary = make_cluster("primary", env=env)
    primary.init()
    primary.start()
    primary.safe_sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g")
    backup = ("backup", "--dsn", primary.dsn, "--kind", "logical")
    old = cli(*backup, "--repo", url, "--lock-days", "1", env=env).stdout.strip()
    cli(*backup, "--repo", url, env=env)  # newer, unlocked: the one-day policy keeps only this one
    bad = cli(*backup, "--repo", s3.repo_url(s3.primary_region, "nolock"), "--lock-days", "1", env=env, code=2)
    assert f"bucket {s3.primary_bucket}" in bad.stderr and "has no Object Lock" in bad.stderr
    bad = cli(*backup, "--repo", f"file://{tmp_path}", "--storage-class", "GLACIER", env=env, code=2)
    assert "need an s3:// repository" in bad.stderr
    primary.stop()

    objects = heads(s3, s3_lock_bucket, f"db/backups/{old}")
    assert "catalog.json" in objects and len(objects) >= 2
    assert all(h["ObjectLockMode"] == "COMPLIANCE" for h in objects.values())
    until = objects["catalog.json"]["ObjectLockRetainUntilDate"]
    assert timedelta(hours=23) < until - datetime.now(UTC) < timedelta(days=1, minutes=5)
    client, data = s3.client(), next(n for n in objects if n != "catalog.json")  # the backup's own credentials
    with pytest.raises(ClientError, match="AccessDenied"):
        client.delete_object(
            Bucket=s3_lock_bucket, Key=f"db/backups/{old}/{data}", VersionId=objects[data]["VersionId"]
        )
    with pytest.raises(RepositoryError, match="Object Lock retention"):
        s3.repository(s3.primary_region, "db", bucket=s3_lock_bucket).purge(f"backups/{old}/{data}")

    config = tmp_path / "retention.toml"
    config.write_text("[retention]\ndaily = 1\nweekly = 0\nmonthly = 0\nyearly = 0\n")
    for dry in (["--dry-run"], []):
        done = cli("prune", "--repo", url, "--config", str(config), *dry, env=env)
        assert "0 backup(s)" in done.stdout and f"locked {old}: S3 Object Lock until" in done.stdout
        assert "Object Lock until" in done.stderr and "a prune after that date deletes it" in done.stderr
    listed = {b["id"]: b for b in json.loads(cli("list", "--repo", url, "--json", env=env).stdout)}
    assert listed[old]["status"] == "DONE"  # not marked FAILED, nothing of it deleted
    assert set(heads(s3, s3_lock_bucket, f"db/backups/{old}")) == set(objects)
    versions = client.list_object_versions(Bucket=s3_lock_bucket, Prefix=f"db/backups/{old}/")
    assert not versions.get("DeleteMarkers")


@pytest.mark.integration
def test_copy_to_glacier_with_object_lock_and_rerun(s3, s3_prefix, s3_lock_bucket, tmp_path):
    src = s3.repository(s3.primary_region, s3_prefix)
    fake_backup(src, "b1")
    fake_wal(src, tmp_path, 2)
    dr = f"s3://{s3_lock_bucket}/dr"
    done = cli("copy", "--repo", src.url, "--to-repo", dr, "--backup", "b1", "--storage-class", "GLACIER",
               "--lock-days", "2", "--json", env=s3.env())  # fmt: skip
    assert json.loads(done.stdout)["copied"] == 3
    objects = heads(s3, s3_lock_bucket, "dr/backups/b1")
    assert {n: h.get("StorageClass", "STANDARD") for n, h in objects.items()} == {
        "backup_manifest": "STANDARD", "base.tar.zst": "GLACIER", "pg_wal.tar.zst": "GLACIER",
        "catalog.json": "STANDARD"}  # fmt: skip
    assert all(h["ObjectLockMode"] == "COMPLIANCE" for h in objects.values())
    wal = heads(s3, s3_lock_bucket, "dr/wal")
    assert all("ObjectLockMode" not in h and "StorageClass" not in h for h in wal.values())
    catalog = json.loads(s3.client().get_object(Bucket=s3_lock_bucket, Key="dr/backups/b1/catalog.json")["Body"].read())
    assert catalog["options"]["storage_class"] == "GLACIER" and "lock_until" in catalog["options"]
    again = cli("copy", "--repo", src.url, "--to-repo", dr, "--backup", "b1", "--storage-class", "GLACIER",
                "--json", env=s3.env())  # fmt: skip
    assert json.loads(again.stdout)["skipped"] == 3  # archived objects checked by their recorded sha256
    bad = cli("copy", "--repo", src.url, "--to-repo", s3.repo_url(s3.dr_region, "x"), "--lock-days", "1",
              env=s3.env(), code=2)  # fmt: skip
    assert "has no Object Lock" in bad.stderr


def test_copy_refuses_another_major_version(tmp_path):
    (tmp_path / "src").mkdir(), (tmp_path / "dst").mkdir()
    src, dst = FileRepository(tmp_path / "src"), FileRepository(tmp_path / "dst")
    fake_backup(src, "b1")
    src.put_bytes("identity.json", b'{"system_identifier": "1", "pg_major": 18}')
    dst.put_bytes("identity.json", b'{"system_identifier": "1", "pg_major": 17}')
    with pytest.raises(VersionMismatch, match="PostgreSQL 17 backups.*PostgreSQL 18"):
        copy_backups(src, dst, backup="b1", log=quiet)
    assert not dst.exists("backups/b1/catalog.json")


def test_prune_removes_the_staging_left_by_a_backup_it_deletes(tmp_path):
    repo = FileRepository(tmp_path)
    now = datetime.now(UTC)
    for i, backup_id in enumerate(("old", "new")):
        entry = FileEntry("x", 1, "0" * 64)
        repo.put_bytes(f"backups/{backup_id}/x", b"x")
        repo.write_catalog(BackupRecord(id=backup_id, kind="logical", status="DONE", files=(entry,),
                                        start_time=now - timedelta(days=3 - i), stop_time=now - timedelta(days=3 - i)))  # fmt: skip
    (tmp_path / "staging" / "old" / "data").mkdir(parents=True)  # left by a killed run of that backup
    (tmp_path / "staging" / "old" / "data" / "base.tar").write_bytes(b"partial")
    (tmp_path / "staging" / "running").mkdir()  # not a backup prune deletes: stays
    logged: list[str] = []
    result = prune(repo, ONE_DAY, now=now, dry_run=False, log=logged.append)
    assert result.deleted == ("old",)
    assert not (tmp_path / "staging" / "old").exists() and (tmp_path / "staging" / "running").exists()
    assert any("Removing" in line and "staging/old" in line for line in logged)
