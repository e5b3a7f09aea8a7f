"""`pytest drills --source-repo` and the predeploy gate, run as README says, against a password-only server with
data in `app` owned by app_owner (started here, outside the drill fixtures); and their usage errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.origin import APP_DB, OWNER
from tests.support.production import run_drill, snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def team_repo(make_origin, tmp_path, run_cli):
    """A production-like server archiving into a repository with a full (restore-tested once) and a logical backup."""
    repo = tmp_path / "repo"
    origin = make_origin("production", has_archiving=True, archive_url=f"file://{repo}")
    env = {"PGPASSFILE": str(origin.passfile)}
    full = run_cli("backup", "--dsn", origin.dsn, "--repo", f"file://{repo}", "--kind", "full", env=env)
    run_cli("verify", "--repo", f"file://{repo}", "--backup", "latest", "--restore-test", env=env)
    run_cli("backup", "--dsn", origin.dsn_for(APP_DB, user=OWNER), "--repo", f"file://{repo}", "--kind", "logical",
            env=env)  # fmt: skip
    return origin, repo, full.stdout.split()[-1], env


@pytest.fixture
def run_cli():
    """backup-tools in a separate process, as a team's backup job runs it."""

    def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "backup_tools", *args], capture_output=True, text=True,
                              timeout=600, env=os.environ | env)  # fmt: skip
        assert done.returncode == 0, f"backup-tools {args[0]} exited {done.returncode}: {done.stderr}"
        return done

    return cli


def test_source_repo_restores_logical_and_physical_backups_and_fails_on_damage(team_repo, tmp_path):
    origin, repo, full, env = team_repo
    before = snapshot(repo)
    for which in ("latest", full):  # latest is the logical backup
        done, record = run_drill(tmp_path, "--source-repo", f"file://{repo}", "--source-backup", which,
                                 select="restore_the_teams_backup", env=env)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:]
        assert record["verdict"] == "pass" and record["data_source"] == "team-backup"
        assert record["rto_seconds"] > 0 and record["rpo_seconds"] is not None and record["rpo_seconds"] >= 0
        checks = {c["name"] for c in record["checks"]}
        assert {"fingerprints (app)", "schema (app)"} <= checks, checks
    assert snapshot(repo) == before, "the source repository changed"

    # A damaged copy of the repository fails the drill, naming the object
    bad = tmp_path / "bad"
    shutil.copytree(repo, bad)
    dump = next(p for p in (bad / "backups").glob("*-logical-*/*") if p.name != "catalog.json")
    dump.write_bytes(dump.read_bytes()[:1000])
    done, record = run_drill(tmp_path, "--source-repo", f"file://{bad}", select="restore_the_teams_backup", env=env)
    assert done.returncode == 1
    assert record["verdict"] in ("fail", "error")
    assert "truncated or replaced" in done.stdout, done.stdout[-2000:]


def test_the_gate_keeps_its_backup_as_the_rollback_copy(make_origin, tmp_path):
    origin = make_origin("production")
    env = {"PGPASSFILE": str(origin.passfile)}
    gate_repo = tmp_path / "gate-repo"
    dsn = f"host=127.0.0.1 port={origin.port} dbname={APP_DB} user={OWNER}"  # the password: PGPASSFILE in env
    done, record = run_drill(tmp_path, "-m", "predeploy", "--dsn", dsn, "--gate-repo", f"file://{gate_repo}",
                             select="test_predeploy and gate_backup_restores", env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    kept = record["notes"]["rollback_copy"]["backup"]
    assert f"rollback copy: backup {kept} in file://{gate_repo}" in done.stdout
    assert (gate_repo / "backups" / kept / "catalog.json").exists()
    assert record["notes"]["roles"].startswith("roles from pg_dumpall --roles-only")
    assert record["data_source"] == "team-database" and record["rto_seconds"] > 0
    assert record["rpo_seconds"] is not None


def test_the_gate_restores_without_owners_when_its_role_may_not_read_the_roles(make_origin, tmp_path):
    origin = make_origin("production")
    with origin.connect(dbname=APP_DB) as conn:  # a hardened server: role memberships are hidden from app roles
        conn.execute("REVOKE SELECT ON pg_catalog.pg_auth_members FROM PUBLIC")
    env = {"PGPASSFILE": str(origin.passfile)}
    dsn = f"host=127.0.0.1 port={origin.port} dbname={APP_DB} user={OWNER}"
    done, record = run_drill(tmp_path, "-m", "predeploy", "--dsn", dsn, select="test_predeploy and gate_backup_restores",
                             env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    notice = record["notes"]["roles"]
    assert notice.startswith("roles not readable with this DSN") and "permission denied for table pg_auth_members" in notice
    assert "restored with --no-owner --no-privileges" in notice and "ownership and GRANTs are not proven" in notice
    assert record["outcome"] == "passed" and record["data_source"] == "team-database" and record["rto_seconds"] > 0
    html = next(tmp_path.glob("report-*/report.html")).read_text()
    assert "restored with --no-owner --no-privileges" in html  # the report shows it too, not only the JSON


@pytest.mark.parametrize("option", ["--dsn", "--source-repo", "--gate-repo", "--source-dumps"])
def test_an_empty_team_source_is_a_usage_error_before_anything_runs(option, tmp_path: Path):
    done, record = run_drill(tmp_path, "-m", "predeploy", option, "", select="gate_backup_restores")
    assert done.returncode == 4, done.stdout[-2000:]
    assert f"{option} is empty" in done.stderr
    assert record == {}
