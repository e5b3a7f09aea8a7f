"""Pre-deployment: roll back a bad migration to the restore point taken before it; and the deploy gate."""

import pytest
from psycopg import sql

from backup_tools.pitr import RecoveryTarget
from backup_tools.verify import Fingerprint
from fixtures.drill import TEAM_DATABASE

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
def test_deploy_gate_backup_restores(request, make_method, drill):
    # Given the database to deploy to: --dsn (only read), or else a seeded stand-in the suite starts itself
    dsn = request.config.getoption("dsn") or request.getfixturevalue("seeded_cluster")("production").dsn
    if request.config.getoption("dsn"):
        drill.set_source(TEAM_DATABASE, kind="dsn", location=dsn)
    gate = make_method("logical")
    drill.use(gate)
    drill.method = "gate"

    # When a fresh logical backup of it is taken (pg_dump reads in one snapshot; nothing is written there)
    drill.mark_failure()
    backup_id = gate.backup(dsn, "logical")

    # Then it restores into an ephemeral cluster and every table matches the fingerprints taken at backup time
    scratch = gate.restore("gate-scratch")
    expected = gate.repo.read_catalog(backup_id).fingerprints
    assert expected, "the backup recorded no table fingerprints to check the restore against"
    drill.verify(scratch, expected=Fingerprint.from_dict(expected))
    drill.finish(scratch)
