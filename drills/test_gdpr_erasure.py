"""GDPR erasure: a user erased after last night's dump must not come back when that dump is restored. The erasure
ledger (kept outside the backups) is replayed by the restore itself, so the cluster is ready only once erased."""

import shutil
from pathlib import Path

import pytest
from psycopg import sql

from backup_tools.security.keys import generate_key_file_text
from fixtures.drill import Check

HARM = sql.SQL("DROP TABLE chat_messages")
CONFIG = """[erasure]
key_file = "erasure.key"
[erasure.subject]
table = "users"
column = "email"
key = "id"
[[erasure.targets]]
table = "chat_messages"
column = "user_id"
by = "key"
[[erasure.targets]]
table = "documents"
column = "uploaded_by"
by = "key"{bucket_key}
[[erasure.targets]]
table = "cases"
column = "assigned_to"
by = "key"
action = "null"
"""
SUBJECT_ROWS = sql.SQL("""SELECT (SELECT count(*) FROM users WHERE email = %(e)s)
  + (SELECT count(*) FROM chat_messages m JOIN users u ON u.id = m.user_id WHERE u.email = %(e)s)
  + (SELECT count(*) FROM documents d JOIN users u ON u.id = d.uploaded_by WHERE u.email = %(e)s)""")


def subject_rows(cluster, email: str) -> int:
    """Rows of the subject still present (the user, their chat messages, the documents they uploaded)."""
    return cluster.safe_sql(SUBJECT_ROWS, {"e": email})[0][0]


def pick_subject(primary) -> str:
    """The first user who owns no clients and has chat messages and documents (the one the drills erase)."""
    return primary.safe_sql("SELECT email FROM users u WHERE NOT EXISTS (SELECT FROM clients c WHERE c.owner_id = u.id)"
                            " AND EXISTS (SELECT FROM chat_messages m WHERE m.user_id = u.id) AND EXISTS (SELECT FROM "
                            "documents d WHERE d.uploaded_by = u.id) ORDER BY id LIMIT 1")[0][0]  # fmt: skip


def erase_then_break(primary, method, drill, tmp_path, *, bucket: Path | None = None):
    """Pick a user who owns no clients, record and apply their erasure, snapshot the truth, inject the harm.

    With bucket, their documents' objects in that document bucket are part of the erasure too.
    Returns (email, ledger URL, erasure config path, truth)."""
    email = pick_subject(primary)
    assert subject_rows(primary, email) > 1
    (tmp_path / "erasure.key").write_text(generate_key_file_text())
    (tmp_path / "erasure.key").chmod(0o600)
    (tmp_path / "erasure.toml").write_text(CONFIG.format(bucket_key='\nbucket_key_column = "storage_key"' if bucket else ""))
    (tmp_path / "ledger").mkdir()
    ledger, config = f"file://{tmp_path / 'ledger'}", str(tmp_path / "erasure.toml")
    method.backup_tools("erasure", "record", "--ledger", ledger, "--config", config, "--subject", email)
    method.backup_tools("erasure", "replay", "--ledger", ledger, "--config", config, "--dsn", primary.dsn,
                        *(["--bucket", str(bucket)] if bucket else []))  # fmt: skip
    assert subject_rows(primary, email) == 0
    truth = drill.snapshot(primary)
    drill.inject_sql(primary, HARM)
    drill.ticker.stop()
    return email, ledger, config, truth


@pytest.mark.drill("gdpr-erasure", method="logical")
@pytest.mark.parametrize("method", ["logical"], indirect=True)
def test_an_erased_user_stays_erased_after_restoring_an_older_dump(protected_primary, method, drill, tmp_path):
    # Given last night's dump; When a user's erasure is recorded in the ledger and applied, then harm forces a restore
    email, ledger, config, truth = erase_then_break(protected_primary, method, drill, tmp_path)

    # Then the restore of the dump taken before the erasure replays the ledger before it returns (inside the RTO)
    method.extra_restore_args = ["--erasure-ledger", ledger, "--erasure-config", config]
    restored = method.restore("restored")

    # And the user, their chat messages and documents are gone at the ready instant; everything else is as it was
    left = subject_rows(restored, email)
    drill.checks.append(Check("erased subject", left == 0, f"{left} row(s) of the erased user after the restore"))
    drill.verify(restored, expected=truth)
    drill.finish(restored)


@pytest.mark.drill("gdpr-erasure", method="logical", fault="erasure ledger not replayed")
@pytest.mark.parametrize("method", ["logical"], indirect=True)
def test_a_restore_without_the_ledger_brings_the_user_back_and_fails(protected_primary, method, drill, tmp_path):
    # Given the same erasure and harm
    email, _, _, truth = erase_then_break(protected_primary, method, drill, tmp_path)

    # When the dump is restored without replaying the ledger, Then the drill catches the erased user coming back
    with drill.expect_detection():
        restored = method.restore("restored")
        if left := subject_rows(restored, email):
            pytest.fail(f"the erased user is back after the restore ({left} rows)")
        drill.verify(restored, expected=truth)
        drill.finish(restored)
    assert "erased user is back" in drill.detected


DOCUMENT_KEYS = sql.SQL("""SELECT d.storage_key, u.email = %(e)s FROM documents d JOIN users u ON u.id = d.uploaded_by
  WHERE u.email = %(e)s OR d.id <= 200 ORDER BY d.id""")


@pytest.mark.drill("gdpr-erasure", method="logical+bucket")
@pytest.mark.parametrize("method", ["logical"], indirect=True)
def test_an_erased_users_documents_stay_erased_after_restoring_the_bucket_backup(protected_primary, method, drill,
                                                                                 tmp_path):  # fmt: skip
    # Given last night's dump, and a document bucket (an object per document) backed up beside it
    primary, bucket = protected_primary, tmp_path / "documents"
    email = pick_subject(primary)
    keys = primary.safe_sql(DOCUMENT_KEYS, {"e": email})
    for key, _ in keys:
        (bucket / key).parent.mkdir(parents=True, exist_ok=True)
        (bucket / key).write_bytes(f"{key}\n".encode() * 64)
    theirs, others = [k for k, mine in keys if mine], [k for k, mine in keys if not mine]
    assert theirs and others
    method.backup_tools("storage", "backup", "--source", str(bucket), "--repo", method.repo_url, "--name", "documents")

    # When the user's erasure (rows, and their documents' objects) is recorded and applied, then the harm
    # destroys a table and the whole bucket
    erased, ledger, config, truth = erase_then_break(primary, method, drill, tmp_path, bucket=bucket)
    assert erased == email and not [k for k in theirs if (bucket / k).exists()]
    shutil.rmtree(bucket)

    # Then the bucket backup (taken before the erasure: it holds the user's objects) is restored first,
    with drill.phase("restore documents from bucket backup"):
        method.backup_tools("storage", "restore", "--to", str(bucket), "--repo", method.repo_url, "--name",
                            "documents")  # fmt: skip
    back = [k for k in theirs if (bucket / k).exists()]
    assert back == theirs, "the bucket backup did not hold the user's objects: nothing would be proven"
    # and the dump's restore replays the ledger into the database and the bucket before it returns
    method.extra_restore_args = ["--erasure-ledger", ledger, "--erasure-config", config, "--erasure-bucket",
                                 str(bucket)]  # fmt: skip
    restored = method.restore("restored")

    # And at the ready instant the user's rows and objects are gone, every other document's object is back
    left, kept = subject_rows(restored, email), [k for k in theirs if (bucket / k).exists()]
    missing = [k for k in others if not (bucket / k).exists()]
    drill.checks.append(Check("erased subject", left == 0, f"{left} row(s) of the erased user after the restore"))
    drill.checks.append(Check("erased subject's objects", not kept,
                              f"{len(kept)} of the erased user's {len(theirs)} object(s) in the restored bucket"))  # fmt: skip
    drill.checks.append(Check("other documents restored", not missing,
                              f"{len(others) - len(missing)} of {len(others)} other objects back"))  # fmt: skip
    drill.notes["bucket"] = {"erased_objects": len(theirs), "other_objects": len(others)}
    drill.verify(restored, expected=truth)
    drill.finish(restored)
