"""SQL_ASCII and LATIN1 clusters end to end (backup, restore, fingerprints), and repositories poisoned by old versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backup_tools.pg.checks import fingerprint
from fixtures.cluster import Cluster
from fixtures.origin import APP_DB, OWNER, SECOND_DB

pytestmark = pytest.mark.integration
SCHEMAS = {APP_DB: ("public", "auth"), SECOND_DB: ("public",)}


def cli(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run backup-tools as a separate process, as operators do."""
    done = subprocess.run([sys.executable, "-m", "backup_tools", *args], capture_output=True, text=True, timeout=600,
                          env=env)  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"backup-tools {' '.join(args)} exited {done.returncode}: {done.stderr}\n{done.stdout}")
    return done


def prints(cluster: Cluster) -> dict[str, dict[str, object]]:
    """Table fingerprints of the origin's databases and schemas."""
    out = {}
    for db, schemas in SCHEMAS.items():
        with cluster.connect(dbname=db) as conn:
            for schema in schemas:
                out[f"{db}.{schema}"] = fingerprint(conn, schema=schema).to_dict()
    return out


@pytest.mark.parametrize("encoding", ["SQL_ASCII", "LATIN1"])
def test_backup_restore_round_trip_in_a_non_utf8_cluster(encoding, make_origin, make_cluster, tmp_path):
    repo = f"file://{tmp_path / 'repo'}"
    origin = make_origin("origin", encoding=encoding, has_archiving=True, archive_url=repo)
    assert origin.safe_sql("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = %s", [APP_DB]) == [
        (encoding,)
    ]
    with origin.connect(dbname=APP_DB) as conn:
        name = conn.execute("SELECT display_name FROM auth.users ORDER BY id LIMIT 1").fetchone()[0]
    assert name == "Zoë Ångström 1", "text reads back as str, in the right characters"

    # Two full backups (the second used to fail: identity.json held "b'7714…'") and a logical one of `app`
    env = {**os.environ, "PGPASSFILE": str(origin.passfile)}
    full = cli("backup", "--dsn", origin.dsn, "--repo", repo, "--kind", "full", env=env).stdout.split()[-1]
    cli("backup", "--dsn", origin.dsn, "--repo", repo, "--kind", "full", env=env)
    identity = json.loads((tmp_path / "repo" / "identity.json").read_text())
    assert identity["system_identifier"].isdigit(), identity
    logical = cli("backup", "--dsn", origin.dsn_for(APP_DB, user=OWNER), "--repo", repo, "--kind", "logical",
                  env=env).stdout.split()[-1]  # fmt: skip
    origin.archive_current_wal()
    truth = prints(origin)

    # The physical backup restores; the suite reads it through its own socket, the origin's pg_hba.conf kept
    restored = make_cluster("restored")
    cli("restore", "--repo", repo, "--backup", full, "--to", str(restored.data_dir), "--target-immediate")
    hba = (restored.data_dir / "pg_hba.conf").read_text()
    restored.append_conf({})
    restored.take_over(superuser="postgres")
    restored.start()
    restored.wait_for_promotion(timeout=120)
    assert prints(restored) == truth
    assert (restored.data_dir / "pg_hba.conf").read_text() == hba
    assert not [line for line in hba.splitlines() if "trust" in line and not line.lstrip().startswith("#")]

    # The logical backup restores into a fresh cluster's `app`, its owner role created NOLOGIN
    scratch = make_cluster("scratch")
    scratch.init(encoding=encoding)
    scratch.start()
    scratch.safe_sql(f'CREATE DATABASE "{APP_DB}"')
    cli("restore", "--repo", repo, "--backup", logical, "--dsn", scratch.dsn_for(APP_DB), "--create-roles")
    with scratch.connect(dbname=APP_DB) as conn:
        got = {f"{APP_DB}.{s}": fingerprint(conn, schema=s).to_dict() for s in SCHEMAS[APP_DB]}
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'users' AND schemaname = 'auth'")
        assert owner.fetchone()[0] == OWNER
    assert got == {k: v for k, v in truth.items() if k.startswith(f"{APP_DB}.")}


def test_a_repository_poisoned_with_bytes_reprs_is_read_correctly(make_cluster, tmp_path: Path):
    repo_dir = tmp_path / "repo"
    repo = f"file://{repo_dir}"
    primary = make_cluster("primary")
    primary.init(has_archiving=True, archive_url=repo)
    primary.start()
    first = cli("backup", "--dsn", primary.dsn, "--repo", repo, "--kind", "full").stdout.split()[-1]
    # What versions before the fix wrote on SQL_ASCII: the repr of bytes
    identity = repo_dir / "identity.json"
    doc = json.loads(identity.read_text())
    sysid = doc["system_identifier"]
    identity.write_text(json.dumps(doc | {"system_identifier": f"b'{sysid}'"}))
    catalog = next(repo_dir.glob(f"backups/{first}/*.json"))
    catalog.write_text(json.dumps(json.loads(catalog.read_text()) | {"system_identifier": f"b'{sysid}'"}))

    cli("backup", "--dsn", primary.dsn, "--repo", repo, "--kind", "full")
    listed = json.loads(cli("list", "--repo", repo, "--json").stdout)
    assert [b["system_identifier"] for b in listed] == [sysid, sysid]
    primary.archive_current_wal()  # wal-push reads the identity too


def test_a_repository_of_another_cluster_is_still_refused(make_cluster, tmp_path: Path):
    repo_dir = tmp_path / "repo"
    primary = make_cluster("primary")
    primary.init()
    primary.start()
    repo_dir.mkdir()
    (repo_dir / "identity.json").write_text(json.dumps({"system_identifier": "b'1234'", "pg_major": primary.pg.major}))
    done = cli("backup", "--dsn", primary.dsn, "--repo", f"file://{repo_dir}", "--kind", "logical", check=False)
    assert done.returncode == 2, done.stderr
    assert "holds backups of database system 1234" in done.stderr
