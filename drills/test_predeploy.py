"""Pre-deployment: roll back a bad migration to the restore point taken before it; and the deploy gate."""

import pytest
from psycopg import sql

from backup_tools.pg.checks import recorded_by_database, recorded_schemas
from backup_tools.pg.run import redact
from backup_tools.restore.pitr import RecoveryTarget
from fixtures.drill import TEAM_DATABASE
from fixtures.gate import gate_roles, note_rollback_copy
from fixtures.origin import APP_DB, OWNER
from fixtures.teamsource import check_restored

RESTORE_POINT = "before-migration-42"
MIGRATIONS = [
    pytest.param(
        sql.SQL("ALTER TABLE cases ALTER COLUMN status TYPE varchar(4) USING left(status, 4)"), id="truncating-alter"
    ),
    pytest.param(sql.SQL("UPDATE documents SET sha256 = md5(filename), updated_at = now()"), id="bad-backfill"),
]


@pytest.mark.drill("predeploy-rollback")
@pytest.mark.parametrize("method", ["full"], indirect=True)
@pytest.mark.parametrize("migration", MIGRATIONS)
def test_roll_back_a_bad_migration_to_the_restore_point(protected_primary, method, drill, migration):
    # Given a seeded primary with a base backup, the application writing, then frozen for the deploy window
    primary = protected_primary
    drill.ticker.stop()
    truth = drill.snapshot(primary)

    # When a named restore point is made and the migration commits, damaging data
    lsn = primary.create_restore_point(RESTORE_POINT)
    drill.notes["restore_point"] = {"name": RESTORE_POINT, "lsn": lsn}
    drill.inject_sql(primary, migration)
    assert drill.snapshot(primary).diff(truth), "the migration changed nothing: no failure was injected"

    # Then the cluster is rolled back to the restore point within the RTO budget, losing no acknowledged commit
    with drill.phase("archive last WAL"):
        method.flush(primary)
    restored = method.restore("rolled-back", target=RecoveryTarget(name=RESTORE_POINT))
    drill.verify(restored, expected=truth)
    drill.finish(restored)


@pytest.mark.predeploy
@pytest.mark.drill("predeploy-rollback", method="gate")
def test_deploy_gate_backup_restores(request, make_method, drill, pg_bin):
    # Given the database to deploy to: --dsn (only read), or else a production-like stand-in the suite starts
    # itself (password logins, `app` owned by app_owner, RLS), reached as the application's owner role
    config = request.config
    dsn = config.getoption("dsn") or request.getfixturevalue("make_origin")("production").dsn_for(APP_DB, user=OWNER)
    if config.getoption("dsn"):
        drill.set_source(TEAM_DATABASE, kind="dsn", location=dsn)
    gate = make_method("logical", repo_url=config.getoption("gate_repo"))

    # When a fresh logical backup of it is taken (pg_dump reads in one snapshot; nothing is written there),
    # with its roles (pg_dumpall --roles-only) when the DSN's role may read them
    drill.mark_failure()
    roles = gate_roles(dsn, pg=pg_bin)
    drill.notes["roles"] = roles.notice
    backup_id = gate.backup(dsn, "logical")
    if config.getoption("gate_repo"):
        drill.notes["rollback_copy"] = {"backup": backup_id, "repo": redact(gate.repo_url)}
        note_rollback_copy(config, f"rollback copy: backup {backup_id} in {redact(gate.repo_url)}")

    # Then it restores into an ephemeral cluster, into a database of the same name with the origin's roles,
    # every table and schema object matches what was recorded at backup time, and the team's checks pass
    record = gate.repo.read_catalog(backup_id)
    scratch = gate.restore("gate-scratch", roles_sql=roles.script, no_owner=roles.script is None)
    assert record.fingerprints, "the backup recorded no table fingerprints to check the restore against"
    schemas = recorded_schemas(record)
    for database, expected in recorded_by_database(record).items():
        drill.verify(scratch, expected=expected, dbname=database, integrity=False, schema=schemas.get(database),
                     schema_skip=() if roles.script else ("roles",))  # fmt: skip
    check_restored(drill, scratch, config=config, backup_time=record.stop_time)  # team checks; data age as RPO
    drill.finish(scratch)
