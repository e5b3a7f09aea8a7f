"""Restore test of a real backup: --source-repo (read-only) or, without it, a repository the suite fills itself."""

import random
from datetime import UTC, datetime

import pytest

from backup_tools.pitr import RecoveryTarget
from backup_tools.runner import run
from backup_tools.verify import Fingerprint
from fixtures.drill import TEAM_BACKUP, Check
from fixtures.ticker import TICKS_TABLE


@pytest.fixture
def source(pytestconfig, seeded_cluster, make_method):
    """The team's repository (--source-repo), or a stand-in: a seeded cluster's full backup, restore-tested nightly."""
    if pytestconfig.getoption("source_repo"):
        key = pytestconfig.getoption("source_key_file")
        return make_method("full", repo_url=pytestconfig.getoption("source_repo"),
                           env={"PGDRILL_KEY_FILE": key} if key else {})  # fmt: skip
    team = make_method("full")
    primary = seeded_cluster("team-primary", env=team.env, **team.primary_config())
    team.protect(primary)
    team.flush(primary)
    team.backup_tools("verify", "--repo", team.repo_url, "--backup", "latest", "--restore-test")
    return team


def verify_against_manifest(cluster):
    """pg_verifybackup the restored data directory before it starts (files the restore itself wrote ignored)."""
    manifest = cluster.data_dir / "backup_manifest"
    if manifest.exists():
        ignored = [a for f in ("postgresql.conf", "postgresql.auto.conf", "recovery.signal") for a in ("-i", f)]
        run([cluster.pg.tool("pg_verifybackup"), "--no-parse-wal", *ignored, cluster.data_dir])


@pytest.mark.drill("restore-test", method="source-repo")
def test_restore_the_teams_backup(pytestconfig, source, drill):
    # Given the source repository's catalog, and the backup to test: latest, random or a given id
    drill.backups, drill.method = source, "source-repo"
    before = {key: source.repo.stat(key) for key in source.repo.list("")}
    records = [r for r in source.repo.list_backups() if r.is_good]
    assert records, f"no finished backup in {source.repo_url}"
    which = pytestconfig.getoption("source_backup")
    chosen = {"latest": records[-1], "random": random.choice(records)}.get(which) or source.repo.read_catalog(which)
    source.taken[:], source.chosen = [chosen.id], chosen.id
    if pytestconfig.getoption("source_repo"):  # the team's backup, not the stand-in: this restore evidences controls
        drill.set_source(TEAM_BACKUP, kind="pgdrill-repo", location=source.repo_url, backup=chosen.id,
                         created_at=chosen.stop_time or chosen.start_time)  # fmt: skip

    # When it is restored into an ephemeral cluster (each object checked against the catalog's sha256 on the way)
    drill.mark_failure()
    target = None if chosen.kind == "logical" else RecoveryTarget(immediate=True)
    restored = source.restore("restore-test", target=target, check=verify_against_manifest)

    # Then the tables match the fingerprints recorded for the backup, and its age is reported as exposure
    recorded = chosen.fingerprints.get("restore_test", {}).get("postgres") or chosen.fingerprints
    assert recorded, f"backup {chosen.id} has no recorded fingerprints: run `backup-tools verify --restore-test` once"
    drill.verify(restored, expected=Fingerprint.from_dict(recorded).without(TICKS_TABLE))
    age = (datetime.now(UTC) - (chosen.stop_time or chosen.start_time)).total_seconds()
    drill.notes["exposure_seconds"] = round(age, 1)
    drill.checks.append(Check("backup age", age <= drill.target.rpo.total_seconds(), f"{age:.0f} s old"))
    drill.finish(restored)
    assert {key: source.repo.stat(key) for key in source.repo.list("")} == before, "the source repository changed"
