"""GDPR erasure: a user erased after last night's dump must not come back when that dump is restored. The erasure
ledger (kept outside the backups) is replayed by the restore itself, so the cluster is ready only once erased."""

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
by = "key"
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


def erase_then_break(primary, method, drill, tmp_path):
    """Pick a user who owns no clients, record and apply their erasure, snapshot the truth, inject the harm.

    Returns (email, ledger URL, erasure config path, truth)."""
    (email,) = primary.safe_sql("SELECT email FROM users u WHERE NOT EXISTS (SELECT FROM clients c WHERE c.owner_id "
                                "= u.id) AND EXISTS (SELECT FROM chat_messages m WHERE m.user_id = u.id) ORDER BY id "
                                "LIMIT 1")[0]  # fmt: skip
    assert subject_rows(primary, email) > 1
    (tmp_path / "erasure.key").write_text(generate_key_file_text())
    (tmp_path / "erasure.key").chmod(0o600)
    (tmp_path / "erasure.toml").write_text(CONFIG)
    (tmp_path / "ledger").mkdir()
    ledger, config = f"file://{tmp_path / 'ledger'}", str(tmp_path / "erasure.toml")
    method.backup_tools("erasure", "record", "--ledger", ledger, "--config", config, "--subject", email)
    method.backup_tools("erasure", "replay", "--ledger", ledger, "--config", config, "--dsn", primary.dsn)
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
