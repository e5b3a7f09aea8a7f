"""The audit trail: every CLI run leaves a hash-chained line (repository and backup_audit table), tampering shows."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from backup_tools.security.keys import generate_key_file_text
from tests.support.repo_ops import run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def world(make_cluster, tmp_path):
    """A password-protected cluster, its password (for PGPASSWORD), a key file and an empty file:// repository."""
    cluster = make_cluster("audited")
    cluster.init(password_auth=True)
    cluster.start()
    password = cluster.passfile.read_text().strip().splitlines()[0].rsplit(":", 1)[1]
    key = tmp_path / "backup.key"
    key.write_text(generate_key_file_text())
    key.chmod(0o600)
    (tmp_path / "repo").mkdir()
    dsn = f"host={cluster.socket_dir} port={cluster.port} user={cluster.superuser} dbname=postgres"
    return cluster, password, key, f"file://{tmp_path / 'repo'}", dsn


def lines(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "audit").iterdir())]


def test_every_run_is_a_chained_line_with_no_secret_and_a_failed_backup_is_failed(world, tmp_path):
    cluster, password, key, repo, dsn = world
    env = {"PGPASSWORD": password, "PGDRILL_AUDIT_DSN": dsn}
    done = run_cli("backup", "--dsn", dsn, "--repo", repo, "--kind", "logical", "--key-file", str(key), env=env)
    assert done.returncode == 0, done.stderr
    backup_id = done.stdout.strip()
    bad = run_cli("backup", "--dsn", dsn.replace("dbname=postgres", "dbname=nosuchdb") + f" password={password}",
                  "--repo", repo, "--kind", "logical", env=env)  # fmt: skip
    assert bad.returncode == 1
    assert run_cli("list", "--repo", repo, env=env).returncode == 0
    assert "audit trail" not in bad.stderr

    got = lines(tmp_path / "repo")
    assert [(x["seq"], x["verb"], x["outcome"]) for x in got] == [(1, "backup", "ok"), (2, "backup", "failed"),
                                                                  (3, "list", "ok")]  # fmt: skip
    assert got[0]["backup_id"] == backup_id and got[0]["size"] > 0 and got[0]["error"] is None
    assert "nosuchdb" in got[1]["error"] and got[1]["exit_code"] == 1
    assert got[0]["host"] and got[0]["os_user"] and got[0]["duration_s"] > 0
    stored = b"".join(p.read_bytes() for p in (tmp_path / "repo" / "audit").iterdir())
    with psycopg.connect(dsn, password=password) as conn:
        rows = conn.execute("SELECT backup_type, status, backup_path, error_message, seq, command, backup_id"
                            " FROM backup_audit ORDER BY seq").fetchall()  # fmt: skip
    assert [(r[0], r[1], r[4]) for r in rows] == [("backup", "ok", 1), ("backup", "failed", 2), ("list", "ok", 3)]
    assert rows[0][6] == backup_id and rows[0][2] == repo
    for secret in (password, key.read_text().strip()):
        assert secret.encode() not in stored
        assert secret not in repr(rows)
    assert "password=***" in got[1]["command"]

    ok = run_cli("audit", "verify", "--repo", repo, "--audit-dsn", dsn, env=env)
    assert ok.returncode == 0 and "3 line(s), chain intact" in ok.stdout, ok.stdout + ok.stderr
    shown = run_cli("audit", "show", "--repo", repo).stdout.splitlines()
    assert len(shown) == 3 and "failed" in shown[1]


def test_verify_detects_an_edited_a_removed_and_a_truncated_line(world, tmp_path):
    cluster, password, key, repo, dsn = world
    env = {"PGPASSWORD": password}
    for _ in range(4):
        assert run_cli("list", "--repo", repo, "--audit-dsn", dsn, env=env).returncode == 0
    audit = tmp_path / "repo" / "audit"
    assert run_cli("audit", "verify", "--repo", repo).returncode == 0

    second = audit / "000000000002.json"
    original = second.read_text()
    second.write_text(original.replace('"outcome":"ok"', '"outcome":"failed"'))
    edited = run_cli("audit", "verify", "--repo", repo)
    assert edited.returncode == 1 and "000000000003.json: previous line's hash does not match" in edited.stdout
    second.write_text('{"note": "replaced"}')
    replaced = run_cli("audit", "verify", "--repo", repo)
    assert "000000000002.json: does not hold line 2 (edited or replaced)" in replaced.stdout
    second.write_text(original)

    second.unlink()
    removed = run_cli("audit", "verify", "--repo", repo)
    assert removed.returncode == 1 and "line(s) 2..2 were removed" in removed.stdout
    assert removed.stdout.count("TAMPERED") == 2, removed.stdout  # the gap and line 3's chain; line 4 is fine
    second.write_text(original)

    (audit / "000000000004.json").unlink()  # the last line: only the table's copy can tell
    assert run_cli("audit", "verify", "--repo", repo).returncode == 0
    truncated = run_cli("audit", "verify", "--repo", repo, "--audit-dsn", dsn, env=env)
    assert truncated.returncode == 1 and "line 4 is in backup_audit but not in the repository" in truncated.stdout


def test_s3_repository_audit_and_an_unreachable_table_only_warns(s3, s3_prefix, tmp_path):
    region = s3.regions[0]
    url = s3.repo_url(region, s3_prefix)
    env = s3.env(region)
    bad_dsn = f"host={tmp_path} port=1 dbname=postgres user=nobody connect_timeout=2"
    for _ in range(2):
        done = run_cli("list", "--repo", url, "--audit-dsn", bad_dsn, env=env)
        assert done.returncode == 0 and "warning: audit trail: could not write backup_audit" in done.stderr
    assert run_cli("list", "--repo", url, env=env | {"PGDRILL_AUDIT": "off"}).returncode == 0  # read-only access
    verified = run_cli("audit", "verify", "--repo", url, env=env)
    assert verified.returncode == 0 and "2 line(s), chain intact" in verified.stdout, verified.stdout + verified.stderr
    missing = run_cli("list", "--repo", f"file://{tmp_path}/no-such-repo")
    assert missing.returncode == 1 and not (tmp_path / "no-such-repo").exists()
