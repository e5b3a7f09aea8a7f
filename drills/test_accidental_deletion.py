"""Accidental deletion: a harmful statement commits; recover the whole cluster to just before it."""

import time

import pytest
from psycopg import sql

from backup_tools.pitr import RecoveryTarget

HARMS = [
    pytest.param(sql.SQL("DROP TABLE documents"), id="drop-table"),
    pytest.param(sql.SQL("DELETE FROM chat_messages"), id="delete-all"),
    pytest.param(sql.SQL("TRUNCATE documents"), id="truncate"),
]
METHODS = ["full", "incremental", "sync-streaming", "logical"]


@pytest.mark.drill("accidental-deletion")
@pytest.mark.parametrize("method", METHODS, indirect=True)
@pytest.mark.parametrize("harm", HARMS)
def test_restore_to_just_before_the_harmful_commit(protected_primary, method, drill, harm):
    # Given a seeded primary protected by the method, the ticker committing, and the truth before the harm
    primary = protected_primary
    truth = drill.snapshot(primary)

    # When the harmful statement commits, and the application keeps writing for a moment
    failure = drill.inject_sql(primary, harm)
    time.sleep(1.0)
    drill.ticker.stop()

    # Then the repository gets the last WAL, and the cluster is restored to just before that commit
    with drill.phase("archive last WAL"):
        method.flush(primary)
    restored = method.restore("restored", target=RecoveryTarget(xid=failure.xid, inclusive=False))
    drill.verify(restored, expected=truth)
    drill.finish(restored)
