"""Table-level restore on a real server: safety copy, side table, foreign keys, a dropped table."""

from __future__ import annotations

import pytest

from backup_tools.backup.logical import DumpOptions, backup_logical
from backup_tools.errors import IntegrityCheckFailed, UsageError
from backup_tools.pg.checks import Fingerprint
from backup_tools.restore.table import restore_table, split_identifiers
from tests.support.logical_env import *  # noqa: F403  (fixtures: server, source, target, repo)

pytestmark = pytest.mark.integration


def test_split_identifiers_unquotes_like_pg_dump_quotes():
    assert split_identifiers('public."Odd ""name"", really"', ".") == ["public", 'Odd "name", really']
    assert split_identifiers('id, "Case", "a, b", x', ", ") == ["id", "Case", "a, b", "x"]


@pytest.mark.parametrize("fmt", ["custom", "directory", "plain"])
def test_replace_rows_after_a_safety_copy(source, repo, pg_bin, fmt):
    record = backup_logical(
        source.dsn, repo, DumpOptions(fmt=fmt, compression="zstd" if fmt == "plain" else None), pg=pg_bin
    )
    # the accident: rows deleted and damaged after the backup
    source.execute("DELETE FROM documents WHERE id > 200")
    source.execute("UPDATE documents SET filename = 'oops' WHERE id <= 10")
    damaged = source.fingerprint(["documents"])

    result = restore_table(repo, record.id, source.dsn, "documents", pg=pg_bin)
    assert result.ok and result.rows == 250 and result.target == "documents" and not result.created
    assert (
        source.fingerprint(["documents"]).tables["documents"]
        == Fingerprint.from_dict(record.fingerprints).tables["documents"]
    )
    assert result.safety_copy and result.safety_copy.startswith("documents_before_restore_")
    assert source.scalar(f'SELECT count(*) FROM "{result.safety_copy}"') == 200  # the damaged state, kept
    assert source.scalar(f"SELECT count(*) FROM \"{result.safety_copy}\" WHERE filename = 'oops'") == 10
    assert damaged.tables["documents"].rows == 200
    assert source.fingerprint(["users", "cases"]) == Fingerprint.from_dict(record.fingerprints).without(
        "clients", "documents", "chat_messages"
    )  # nothing else touched


def test_restore_into_a_side_table_leaves_the_live_table_alone(source, repo, pg_bin):
    record = backup_logical(source.dsn, repo, pg=pg_bin)
    source.execute("DELETE FROM documents WHERE id <= 50")
    live = source.fingerprint(["documents"])

    result = restore_table(repo, record.id, source.dsn, "documents", into="documents_restored", pg=pg_bin)
    assert result.ok and result.target == "documents_restored" and result.safety_copy is None and result.rows == 250
    assert source.fingerprint(["documents"]) == live
    assert source.scalar("SELECT count(*) FROM documents_restored d WHERE NOT EXISTS "
                         "(SELECT 1 FROM documents WHERE documents.id = d.id)") == 50  # fmt: skip
    with pytest.raises(UsageError, match="documents_restored already exists"):
        restore_table(repo, record.id, source.dsn, "documents", into="documents_restored", pg=pg_bin)


def test_referenced_table_is_swapped_without_cascading_to_children(source, repo, pg_bin):
    source.execute("CREATE TABLE case_notes (id int PRIMARY KEY, case_id bigint REFERENCES cases ON DELETE CASCADE)")
    source.execute("INSERT INTO case_notes SELECT g, g FROM generate_series(1, 100) g")
    record = backup_logical(source.dsn, repo, pg=pg_bin)
    source.execute("UPDATE cases SET title = 'overwritten by a bad migration'")

    result = restore_table(repo, record.id, source.dsn, "cases", pg=pg_bin)
    assert result.ok and result.rows == 100
    assert source.scalar("SELECT count(*) FROM case_notes") == 100  # ON DELETE CASCADE did not fire
    assert source.scalar("SELECT count(*) FROM chat_messages") == 600
    assert source.scalar(f'SELECT count(DISTINCT title) FROM "{result.safety_copy}"') == 1


def test_restore_that_would_orphan_rows_is_refused_and_changes_nothing(source, repo, pg_bin):
    record = backup_logical(source.dsn, repo, pg=pg_bin)
    source.execute("INSERT INTO cases SELECT 9999, client_id, assigned_to, title, status, opened_at, updated_at "
                   "FROM cases WHERE id = 1")  # fmt: skip
    source.execute(
        "INSERT INTO chat_messages SELECT 9999, 9999, user_id, body, created_at FROM chat_messages WHERE id = 1"
    )
    before = source.fingerprint()
    tables_before = source.tables()

    with pytest.raises(
        IntegrityCheckFailed, match=r"would break foreign keys.*chat_messages\.case_id -> cases: 1 rows"
    ):
        restore_table(repo, record.id, source.dsn, "cases", pg=pg_bin)
    assert source.fingerprint() == before
    assert source.tables() == tables_before  # no safety copy left behind either


def test_dropped_table_is_recreated_with_its_keys_indexes_and_foreign_keys(source, repo, pg_bin):
    record = backup_logical(source.dsn, repo, pg=pg_bin)
    definitions = "SELECT {} FROM {} WHERE {} = 'chat_messages'::regclass ORDER BY 1"
    constraints = definitions.format("conname || ' ' || pg_get_constraintdef(oid)", "pg_constraint", "conrelid")
    indexes = definitions.format("pg_get_indexdef(indexrelid)", "pg_index", "indrelid")
    before = [source.cluster.safe_sql(q, dbname=source.name) for q in (constraints, indexes)]
    assert any("FOREIGN KEY" in c for (c,) in before[0]) and len(before[1]) == 2  # pkey and (case_id, created_at)
    source.execute("DROP TABLE chat_messages")

    result = restore_table(repo, record.id, source.dsn, "chat_messages", pg=pg_bin)
    assert result.ok and result.created and result.rows == 600 and result.safety_copy is None
    assert [source.cluster.safe_sql(q, dbname=source.name) for q in (constraints, indexes)] == before


def test_table_not_in_the_backup_is_refused(source, repo, pg_bin):
    record = backup_logical(source.dsn, repo, DumpOptions(tables=("users",)), pg=pg_bin)
    before = source.fingerprint()
    with pytest.raises(UsageError, match=f"backup {record.id} holds no rows of table 'documents'"):
        restore_table(repo, record.id, source.dsn, "documents", pg=pg_bin)
    assert source.fingerprint() == before
