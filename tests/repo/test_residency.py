"""Residency on moto's S3 server (two regions): the region recorded at creation, backup/copy refuse, check flags."""

from __future__ import annotations

import json

import pytest

from tests.support.repo_ops import run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def db(make_cluster):
    cluster = make_cluster("resident")
    cluster.init()
    cluster.start()
    cluster.safe_sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
    return cluster


def test_backup_and_copy_refuse_and_check_flags_a_repository_outside_the_allowed_regions(db, s3, s3_prefix, tmp_path):
    primary, dr = s3.regions
    src, dst = s3.repo_url(primary, s3_prefix), s3.repo_url(dr, s3_prefix)
    env = s3.env(primary)
    done = run_cli("backup", "--dsn", db.dsn, "--repo", src, "--kind", "logical", "--allowed-regions", primary,
                   env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    recorded = s3.client(primary).get_object(Bucket=s3.bucket(primary), Key=f"{s3_prefix}/residency.json")
    assert json.loads(recorded["Body"].read())["regions"] == [primary]

    # the DR bucket is in another region: a copy there is refused before anything is written
    refused = run_cli("copy", "--repo", src, "--to-repo", dst, "--allowed-regions", primary, env=env)
    assert refused.returncode == 2, refused.stderr
    assert f"residency: {dst} is in {dr}, outside the allowed regions {primary}; nothing was written" in refused.stderr
    assert "Contents" not in s3.client(dr).list_objects_v2(Bucket=s3.bucket(dr), Prefix=s3_prefix)
    refused_backup = run_cli("backup", "--dsn", db.dsn, "--repo", dst, "--kind", "logical", env=env | {
        "PGDRILL_ALLOWED_REGIONS": primary})  # fmt: skip
    assert refused_backup.returncode == 2 and f"outside the allowed regions {primary}" in refused_backup.stderr

    # allowed in both: the copy records the DR region there; check against the primary-only list flags it
    both = f"{primary},{dr}"
    assert run_cli("copy", "--repo", src, "--to-repo", dst, "--allowed-regions", both, env=env).returncode == 0
    flagged = run_cli("check", "--repo", dst, "--max-age", "1d", "--allowed-regions", primary, env=env)
    assert flagged.returncode == 1
    assert f"CRITICAL residency: {dst} is in {dr}, outside the allowed regions {primary}" in flagged.stdout
    fine = run_cli("check", "--repo", src, "--max-age", "1d", "--allowed-regions", primary, "--json", env=env)
    doc = json.loads(fine.stdout)
    assert {"name": "residency", "ok": True}.items() <= next(
        c for c in doc["checks"] if c["name"] == "residency"
    ).items()


def test_a_file_repository_needs_a_declared_region_when_a_list_is_set(db, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    url = f"file://{repo}"
    bad = run_cli("backup", "--dsn", db.dsn, "--repo", url, "--kind", "logical", "--allowed-regions", "eu-central-1")
    assert bad.returncode == 2 and "has no known region (a file:// repository: set PGDRILL_REGION)" in bad.stderr
    ok = run_cli("backup", "--dsn", db.dsn, "--repo", url, "--kind", "logical", "--allowed-regions", "eu-central-1",
                 env={"PGDRILL_REGION": "eu-central-1"})  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads((repo / "residency.json").read_text()) == {
        "regions": ["eu-central-1"],
        "source": "PGDRILL_REGION",
    }
    moved = run_cli("check", "--repo", url, "--max-age", "1d", "--allowed-regions", "eu-central-1",
                    env={"PGDRILL_REGION": "eu-west-1"})  # fmt: skip
    assert "CRITICAL residency" in moved.stdout and "eu-west-1, outside the allowed regions" in moved.stdout
