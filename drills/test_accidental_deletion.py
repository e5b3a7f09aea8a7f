"""Accidental deletion: a harmful statement is committed; recover the whole cluster to just before it."""

import time

import pytest
from psycopg import sql

from backup_tools.pitr import RecoveryTarget
from backup_tools.verify import fingerprint
from fixtures.seed import seed_database
from fixtures.ticker import TICKS_TABLE

HARMS = [
    pytest.param(sql.SQL("DROP TABLE documents"), id="drop-table"),
]


@pytest.mark.drill("accidental-deletion", method="pitr")
@pytest.mark.parametrize("harm", HARMS)
def test_pitr_to_just_before_the_harmful_commit(make_cluster, drill, harm, scale, seed):
    # Given a seeded primary with WAL archiving, a base backup, and the ticker committing
    primary = make_cluster("primary")
    primary.init(has_archiving=True)
    primary.start()
    with primary.connect() as conn:
        drill.notes["seed"] = seed_database(conn, scale=scale, seed=seed).rows
    primary.backup("base")
    drill.start_ticker(primary)
    time.sleep(1.0)
    with primary.connect() as conn:
        truth = fingerprint(conn, exclude=(TICKS_TABLE,))

    # When the harmful statement commits, and the application keeps writing for a moment
    failure = drill.inject_sql(primary, harm)
    time.sleep(1.0)
    drill.ticker.stop()

    # Then archive the last WAL, and restore the base backup with PITR to just before that commit
    with drill.phase("archive last WAL"):
        primary.archive_current_wal()
    restored = make_cluster("restored")
    with drill.phase("copy base backup"):
        restored.init_from_backup(primary, "base", has_restoring=True, target=RecoveryTarget(xid=failure.xid, inclusive=False))
    with drill.phase("WAL replay + start"):
        restored.start()
        restored.wait_for_promotion()
    drill.verify(restored, expected=truth)
    drill.finish(restored)
