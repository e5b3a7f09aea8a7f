"""Corruption: a damaged data file (physical) or a bad UPDATE (logical); detect it and recover from the backup."""


import pytest
from psycopg import sql

from backup_tools.restore.pitr import RecoveryTarget
from fixtures.faults import DETECTORS, damage_relation

PHYSICAL = [
    pytest.param("full", "read", id="full-read"),
    pytest.param("full", "amcheck", id="full-amcheck"),
    pytest.param("full", "pg_checksums", id="full-pg_checksums"),
    pytest.param("sync-streaming", "read", id="sync-streaming-read"),
    pytest.param("logical", "read", id="logical-read"),
]
METHODS = ["full", "incremental"]
BAD_UPDATE = sql.SQL("UPDATE cases SET status = 'closed', updated_at = now()")


@pytest.mark.drill("corruption")
@pytest.mark.parametrize(("method", "detector"), PHYSICAL, indirect=["method"])
def test_damaged_data_file_is_detected_and_restored(protected_primary, method, drill, detector):
    # Given a seeded primary with data checksums on, protected by the method, the ticker committing
    primary = protected_primary
    truth = drill.snapshot(primary)

    # When one block of the documents table's data file is overwritten on disk
    drill.mark_failure()
    damage = damage_relation(primary, "documents")
    drill.notes["damage"] = {"file": damage.path.name, "offset": damage.offset, "bytes": damage.length}

    # Then the detector reports the damaged block
    with drill.phase(f"detect with {detector}"):
        problems = DETECTORS[detector](primary, "documents")
    assert problems, f"{detector} did not notice the damaged block of documents"
    drill.notes["detected"] = problems

    # And the backup, with all the WAL the repository holds, restores the data as it was
    drill.ticker.stop()
    with drill.phase("archive last WAL"):
        method.flush(primary)
    restored = method.restore("restored")
    drill.verify(restored, expected=truth)
    drill.finish(restored)


@pytest.mark.drill("corruption")
@pytest.mark.parametrize("method", METHODS, indirect=True)
def test_update_without_where_is_undone(protected_primary, method, drill):
    # Given a seeded primary protected by the method, the ticker committing, and the truth before the harm
    primary = protected_primary
    truth = drill.snapshot(primary)

    # When an UPDATE without WHERE commits, and the application keeps writing for a moment
    failure = drill.inject_sql(primary, BAD_UPDATE)
    drill.pause(1.0, why="the application keeps writing")
    drill.ticker.stop()

    # Then the cluster is restored to just before that transaction (a dump: to the dump's snapshot)
    with drill.phase("archive last WAL"):
        method.flush(primary)
    restored = method.restore("restored", target=RecoveryTarget(xid=failure.xid, inclusive=False))
    drill.verify(restored, expected=truth)
    drill.finish(restored)
