"""Restore test of a real backup: --source-repo (read-only) or, without it, a repository the suite fills itself."""

import random

import pytest

from backup_tools.pg.checks import recorded_by_database, recorded_schemas
from backup_tools.pg.run import run
from backup_tools.restore.pitr import RecoveryTarget
from fixtures.drill import TEAM_BACKUP
from fixtures.origin import APP_DB, OWNER
from fixtures.teamsource import check_restored, skip_stand_in
from fixtures.ticker import TICKS_TABLE


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One restore test of --source-repo's chosen backup; without it, one per stand-in backup kind."""
    if "source" in metafunc.fixturenames:
        kinds = ["team"] if metafunc.config.getoption("source_repo") else ["full", "logical"]
        metafunc.parametrize("source", kinds, indirect=True)


@pytest.fixture
def source(request, pytestconfig, make_origin, make_method):
    """The team's repository (--source-repo), or a stand-in filled from a production-like server (password logins,
    data in `app` owned by app_owner, an auth schema with RLS): a full backup restore-tested once, or a dump of app."""
    if request.param == "team":
        key = pytestconfig.getoption("source_key_file")
        return make_method("full", repo_url=pytestconfig.getoption("source_repo"),
                           env={"PGDRILL_KEY_FILE": key} if key else {})  # fmt: skip
    skip_stand_in(pytestconfig)  # the run restore-tests the team's dumps or stanza instead
    team = make_method(request.param)
    origin = make_origin("team-primary", env=team.env, **team.primary_config())
    if request.param == "logical":
        team.backup(origin.dsn_for(APP_DB, user=OWNER), "logical")  # the application's own role dumps its database
        return team
    team.protect(origin)
    team.flush(origin)
    team.backup_tools("verify", "--repo", team.repo_url, "--backup", "latest", "--restore-test")
    return team


def verify_against_manifest(cluster):
    """pg_verifybackup the restored data directory before it starts (files the restore itself wrote ignored)."""
    manifest = cluster.data_dir / "backup_manifest"
    if manifest.exists():
        ignored = [a for f in ("postgresql.conf", "postgresql.auto.conf", "recovery.signal") for a in ("-i", f)]
        run([cluster.pg.tool("pg_verifybackup"), "--no-parse-wal", *ignored, cluster.data_dir])


@pytest.mark.drill("restore-test", method="source-repo")
def test_restore_the_teams_backup(pytestconfig, source, drill, make_method):
    # Given the source repository's catalog, and the backup to test: latest, random or a given id
    before = {key: source.repo.stat(key) for key in source.repo.list("")}
    records = [r for r in source.repo.list_backups() if r.is_good]
    assert records, f"no finished backup in {source.repo_url}"
    which = pytestconfig.getoption("source_backup")
    chosen = {"latest": records[-1], "random": random.choice(records)}.get(which) or source.repo.read_catalog(which)
    source.taken[:], source.chosen = [chosen.id], chosen.id
    if pytestconfig.getoption("source_repo"):  # the team's backup, not the stand-in: this restore evidences controls
        drill.set_source(TEAM_BACKUP, kind="pgdrill-repo", location=source.repo_url, backup=chosen.id,
                         created_at=chosen.stop_time or chosen.start_time)  # fmt: skip

    # When it is restored into an ephemeral cluster (each object checked against the catalog's sha256 on the way);
    # the suite reads a physical copy through its own socket (the copy keeps the origin's pg_hba.conf)
    drill.mark_failure()
    read_only = source.env | {"PGDRILL_AUDIT": "off"}  # no audit line in the team's repository: it stays read-only
    restorer = make_method("logical" if chosen.kind == "logical" else "full", repo_url=source.repo_url, env=read_only)
    restorer.taken[:], restorer.chosen = [chosen.id], chosen.id
    if chosen.kind == "logical":
        restored = restorer.restore("restore-test")
    else:
        superuser = chosen.options.get("superuser", "postgres")

        def prepare(cluster):
            verify_against_manifest(cluster)
            cluster.take_over(superuser=superuser)

        restored = restorer.restore("restore-test", target=RecoveryTarget(immediate=True), check=prepare)

    # Then every database's tables and schema objects (RLS policies, functions, triggers...) match those recorded
    recorded = recorded_by_database(chosen)
    assert recorded, f"backup {chosen.id} has no recorded fingerprints: run `backup-tools verify --restore-test` once"
    schemas = recorded_schemas(chosen)
    for database, expected in sorted(recorded.items()):
        drill.verify(restored, expected=expected.without(TICKS_TABLE), dbname=database, integrity=False,
                     schema=schemas.get(database))  # fmt: skip
    # and the team's checks (--checks, --checks-dir); RPO is the age of the newest data, beside the backup's own age
    check_restored(drill, restored, config=pytestconfig, backup_time=chosen.stop_time or chosen.start_time)
    drill.finish(restored)
    assert {key: source.repo.stat(key) for key in source.repo.list("")} == before, "the source repository changed"
