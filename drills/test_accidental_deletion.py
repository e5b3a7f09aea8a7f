"""Accidental deletion: a harmful statement commits; restore the whole cluster to just before it (after salvaging
what was written since), or restore only the harmed table from a logical backup, keeping a safety copy."""


import pytest
from psycopg import sql

from backup_tools.restore.pitr import RecoveryTarget
from fixtures.salvage import salvage_rows
from fixtures.ticker import TICKS_TABLE

DROP = sql.SQL("DROP TABLE documents")
DELETE = sql.SQL("DELETE FROM chat_messages")
TRUNCATE = sql.SQL("TRUNCATE documents")
WHOLE_CLUSTER = [
    pytest.param("full", DROP, id="full-drop-table"),
    pytest.param("full", DELETE, id="full-delete-all"),
    pytest.param("full", TRUNCATE, id="full-truncate"),
    pytest.param("incremental", DROP, id="incremental-drop-table"),
    pytest.param("sync-streaming", DELETE, id="sync-streaming-delete-all"),
    pytest.param("logical", DROP, id="logical-drop-table"),
]
ONE_TABLE = [
    pytest.param(DROP, "documents", id="drop-table"),
    pytest.param(DELETE, "chat_messages", id="delete-all"),
    pytest.param(TRUNCATE, "documents", id="truncate"),
]


@pytest.mark.drill("accidental-deletion")
@pytest.mark.parametrize(("method", "harm"), WHOLE_CLUSTER, indirect=["method"])
def test_restore_to_just_before_the_harmful_commit(protected_primary, method, drill, harm, tmp_path):
    # Given a seeded primary protected by the method, the ticker committing, and the truth before the harm
    primary = protected_primary
    truth = drill.snapshot(primary)

    # When the harmful statement commits, and the application keeps writing for a moment
    failure = drill.inject_sql(primary, harm)
    drill.pause(1.0, why="the application keeps writing")
    drill.ticker.stop()

    # Then rows committed since the incident are exported from the damaged cluster before it is replaced
    with drill.phase("salvage post-incident rows"):
        salvaged = salvage_rows(primary, since=failure.t_fail, directory=tmp_path / "salvage")
    drill.notes["salvage"] = salvaged.to_note()

    # And the cluster is restored to just before that commit (a dump: to the dump's snapshot)
    with drill.phase("archive last WAL"):
        method.flush(primary)
    restored = method.restore("restored", target=RecoveryTarget(xid=failure.xid, inclusive=False))
    drill.verify(restored, expected=truth)
    drill.finish(restored)

    # And every post-incident commit the restore discarded is in the salvage export
    drill.notes["post_incident_commits_discarded"] = drill.rpo.discarded_after_failure
    assert salvaged.rows.get(TICKS_TABLE, 0) == drill.rpo.discarded_after_failure > 0


@pytest.mark.drill("accidental-deletion", method="logical-table-restore")
@pytest.mark.parametrize("method", ["logical"], indirect=True)
@pytest.mark.parametrize(("harm", "table"), ONE_TABLE)
def test_table_level_restore_from_logical_backup(protected_primary, method, drill, harm, table):
    # Given a seeded primary with a logical backup, the ticker committing, and the truth before the harm
    primary = protected_primary
    truth = drill.snapshot(primary)

    # When the harmful statement commits, and the application keeps writing
    drill.inject_sql(primary, harm)
    drill.pause(1.0, why="the application keeps writing")

    # Then only the harmed table is restored into the live cluster, its current contents kept as a safety copy
    with drill.phase("table-level restore", size_bytes=method.backup_size()):
        result = method.restore_table(primary, table)
    drill.ticker.stop()
    drill.notes["table_restore"] = {"table": table, "rows": result.rows, "recreated": result.created,
                                    "safety_copy": result.safety_copy}  # fmt: skip
    assert result.ok, f"restored {table} differs from the backup's fingerprint: {result.differences}"
    assert result.created or result.safety_copy, "the table existed but no safety copy was kept"

    # And every table matches the truth, while no commit made after the incident was lost
    drill.verify(primary, expected=truth, ignore=(result.safety_copy,) if result.safety_copy else ())
    drill.finish(primary)
    assert drill.rpo.discarded_after_failure == 0
