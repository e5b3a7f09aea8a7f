"""GDPR erasure ledger and replay: a restore of a backup taken before an erasure does not bring the subject back."""

from __future__ import annotations

import json

import pytest

from backup_tools.security.keys import generate_key_file_text
from tests.support.repo_ops import run_cli

pytestmark = pytest.mark.integration

SUBJECT = "alice@example.org"


@pytest.fixture
def world(make_cluster, tmp_path):
    cluster = make_cluster("gdpr")
    cluster.init()
    cluster.start()
    for db in ("app", "restored", "unerased", "refused"):
        cluster.safe_sql(f"CREATE DATABASE {db}")
    cluster.safe_sql(
        "CREATE SCHEMA app; CREATE TABLE app.users (id int PRIMARY KEY, email text UNIQUE, name text);"
        "CREATE TABLE app.documents (id int PRIMARY KEY, owner_email text REFERENCES app.users (email), body text);"
        f"INSERT INTO app.users VALUES (1, '{SUBJECT}', 'Alice'), (2, 'bob@example.org', 'Bob'), (3, NULL, 'Anon');"
        f"INSERT INTO app.documents VALUES (1, '{SUBJECT}', 'lease'), (2, '{SUBJECT}', 'payslip'), (3, 'bob@example.org', 'cv')",
        dbname="app",
    )  # fmt: skip
    key = tmp_path / "erasure.key"
    key.write_text(generate_key_file_text())
    key.chmod(0o600)
    config = tmp_path / "erasure.toml"
    config.write_text('[erasure]\nkey_file = "erasure.key"\n'
                      '[[erasure.targets]]\ntable = "app.documents"\ncolumn = "owner_email"\n'
                      '[[erasure.targets]]\ntable = "app.users"\ncolumn = "email"\n')  # fmt: skip
    (tmp_path / "repo").mkdir()
    (tmp_path / "ledger").mkdir()
    return cluster, config, f"file://{tmp_path / 'repo'}", f"file://{tmp_path / 'ledger'}"


def emails(cluster, db: str) -> list:
    return [r[0] for r in cluster.safe_sql("SELECT email FROM app.users ORDER BY id", dbname=db)]


def test_a_restore_replays_the_ledger_before_ready_and_an_unreachable_ledger_restores_nothing(world, tmp_path):
    cluster, config, repo, ledger = world
    # Given a backup taken before the erasure, then the erasure request (recorded, and applied to the live data)
    backup = run_cli("backup", "--dsn", cluster.dsn_for("app"), "--repo", repo, "--kind", "logical")
    assert backup.returncode == 0, backup.stderr
    recorded = run_cli("erasure", "record", "--ledger", ledger, "--config", str(config), "--subject", SUBJECT)
    assert recorded.returncode == 0, recorded.stderr
    stored = b"".join(p.read_bytes() for p in (tmp_path / "ledger").rglob("*.json"))
    assert SUBJECT.encode() not in stored and b"alice" not in stored.lower()
    assert run_cli("erasure", "replay", "--ledger", ledger, "--config", str(config), "--dsn",
                   cluster.dsn_for("app")).returncode == 0  # fmt: skip
    assert emails(cluster, "app") == ["bob@example.org", None]

    # When the old backup is restored with the ledger, the subject's rows are gone before the restore returns
    done = run_cli("restore", "--repo", repo, "--dsn", cluster.dsn_for("restored"), "--erasure-ledger", ledger,
                   "--erasure-config", str(config))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "### Erasure replay: 2 row(s) removed from app.documents" in done.stderr
    assert emails(cluster, "restored") == ["bob@example.org", None]
    assert cluster.safe_sql("SELECT body FROM app.documents ORDER BY id", dbname="restored") == [("cv",)]

    # without the ledger the same restore brings the subject back: the replay is what removes it
    assert run_cli("restore", "--repo", repo, "--dsn", cluster.dsn_for("unerased")).returncode == 0
    assert SUBJECT in emails(cluster, "unerased")

    # a second replay finds nothing left to remove
    again = run_cli(
        "erasure", "replay", "--ledger", ledger, "--config", str(config), "--dsn", cluster.dsn_for("restored")
    )
    assert json.loads(again.stdout) == {"requests": 1, "removed": {"app.documents": 0, "app.users": 0}}

    # an unreachable ledger fails the restore before anything is restored
    gone = run_cli("restore", "--repo", repo, "--dsn", cluster.dsn_for("refused"), "--erasure-ledger",
                   f"file://{tmp_path / 'no-ledger'}", "--erasure-config", str(config))  # fmt: skip
    assert gone.returncode == 1 and "erasure ledger" in gone.stderr and "not ready" in gone.stderr
    assert cluster.safe_sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'app'", dbname="refused") == [(0,)]


def test_a_physical_restore_replays_into_the_started_server(make_cluster, tmp_path, world):
    _, config, _, ledger = world
    from backup_tools.pg.ports import free_port

    repo = tmp_path / "phys"
    repo.mkdir()
    primary = make_cluster("gdpr-primary")
    primary.init(has_archiving=True, archive_url=f"file://{repo}")
    primary.start()
    primary.safe_sql(f"CREATE SCHEMA app; CREATE TABLE app.users (id int PRIMARY KEY, email text);"
                     f"CREATE TABLE app.documents (id int, owner_email text);"
                     f"INSERT INTO app.users VALUES (1, '{SUBJECT}'), (2, 'bob@example.org')")  # fmt: skip
    assert run_cli("backup", "--dsn", primary.dsn, "--repo", f"file://{repo}", "--kind", "full").returncode == 0
    assert (
        run_cli("erasure", "record", "--ledger", ledger, "--config", str(config), "--subject", SUBJECT).returncode == 0
    )
    sock, port = tmp_path / "s", free_port()
    sock.mkdir()
    missing = run_cli("restore", "--repo", f"file://{repo}", "--to", str(tmp_path / "r0"), "--erasure-ledger", ledger,
                      "--erasure-config", str(config))  # fmt: skip
    assert missing.returncode == 2 and "add --start and --erasure-dbname" in missing.stderr
    done = run_cli("restore", "--repo", f"file://{repo}", "--to", str(tmp_path / "r"), "--target-immediate", "--start",
                   "--port", str(port), "--socket-dir", str(sock), "--erasure-ledger", ledger, "--erasure-config",
                   str(config), "--erasure-dbname", "postgres", "--erasure-user", primary.superuser)  # fmt: skip
    try:
        assert done.returncode == 0, done.stderr
        import psycopg

        with psycopg.connect(host=str(sock), port=port, user=primary.superuser, dbname="postgres") as conn:
            assert conn.execute("SELECT email FROM app.users").fetchall() == [("bob@example.org",)]
    finally:
        import subprocess

        subprocess.run([str(primary.pg.tool("pg_ctl")), "-D", str(tmp_path / "r"), "-m", "immediate", "stop"],
                       capture_output=True, check=False)  # fmt: skip


def test_check_flags_backups_still_holding_subjects_erased_past_the_promise(tmp_path):
    from datetime import UTC, datetime, timedelta

    from backup_tools.repo.base import FileRepository
    from backup_tools.restore.erasure import load_erasure_config, record
    from tests.lifecycle.test_retention import rec

    now = datetime.now(UTC)
    (tmp_path / "erasure.key").write_text(generate_key_file_text())
    (tmp_path / "erasure.toml").write_text('[erasure]\nkey_file = "erasure.key"\n'
                                           '[[erasure.targets]]\ntable = "users"\ncolumn = "email"\n')  # fmt: skip
    config = load_erasure_config(tmp_path / "erasure.toml")
    repo = FileRepository(tmp_path / "repo")
    for name, age in (("old", 60), ("after", 20), ("new", 1)):
        repo.write_catalog(rec(name, now - timedelta(days=age), kind="logical"))
    ledger = f"file://{tmp_path / 'ledger'}"
    record(ledger, config, SUBJECT, now=now - timedelta(days=10))
    check = ["check", "--repo", repo.url, "--max-age", "100d", "--erasure-ledger", ledger]
    within = run_cli(*check)
    assert "OK       erasure: no backup older than an erasure request past 30 d (1 requests)" in within.stdout
    record(ledger, config, "bob@example.org", now=now - timedelta(days=45))
    late = run_cli(*check)
    assert late.returncode == 1
    assert "CRITICAL erasure: 1 backup(s) taken before erasure requests older than 30 d still hold" in late.stdout
    assert "(oldest old)" in late.stdout
    strict = run_cli(*check, "--erasure-days", "7")
    assert "CRITICAL erasure: 2 backup(s)" in strict.stdout


def test_replay_deletes_the_subjects_documents_from_the_bucket_too(world, tmp_path):
    cluster, _, _, ledger = world
    cluster.safe_sql("ALTER TABLE app.documents ADD storage_key text; UPDATE app.documents SET storage_key = "
                     "'docs/' || id || '.pdf'", dbname="app")  # fmt: skip
    bucket = tmp_path / "bucket"
    (bucket / "docs").mkdir(parents=True)
    for i in (1, 2, 3):
        (bucket / "docs" / f"{i}.pdf").write_bytes(b"%PDF " + bytes([i]) * 100)
    config = tmp_path / "erasure-docs.toml"
    config.write_text('[erasure]\nkey_file = "erasure.key"\n[[erasure.targets]]\ntable = "app.documents"\n'
                      'column = "owner_email"\nbucket_key_column = "storage_key"\n')  # fmt: skip
    assert (
        run_cli("erasure", "record", "--ledger", ledger, "--config", str(config), "--subject", SUBJECT).returncode == 0
    )
    replay = ["erasure", "replay", "--ledger", ledger, "--config", str(config), "--dsn", cluster.dsn_for("app")]
    no_bucket = run_cli(*replay)
    assert no_bucket.returncode == 2 and "give the document bucket (--bucket)" in no_bucket.stderr
    done = run_cli(*replay, "--bucket", str(bucket))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == {f"{bucket} objects": 2, "app.documents": 2}
    assert sorted(p.name for p in (bucket / "docs").iterdir()) == ["3.pdf"]
    assert cluster.safe_sql("SELECT storage_key FROM app.documents", dbname="app") == [("docs/3.pdf",)]
