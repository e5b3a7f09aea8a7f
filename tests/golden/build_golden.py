"""Builds the golden repositories (run through `python -m tests.golden.make_golden`, never collected by default).

Each repository holds a full, an incremental (PostgreSQL 17+), a logical and a bucket backup plus the archived
WAL of a small cluster; `plain` is unencrypted, `encrypted` uses golden.key. manifest.json records every backup
with the fingerprint its restore must reproduce.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from backup_tools import __version__
from backup_tools.catalog import FORMAT_VERSION
from backup_tools.pg.checks import fingerprint
from backup_tools.security.keys import generate_key_file_text
from fixtures.cluster import backup_tools_command
from tests.support.repo_ops import cli_ok

OUT_ENV = "PGDRILL_GOLDEN_OUT"
DOCS = {"contracts/2024/lease.pdf": b"%PDF-1.4 golden lease\n" * 40, "photos/site.jpg": bytes(range(256)) * 8,
        "readme.txt": b"golden bucket\n"}  # fmt: skip


def _write_rows(cluster, first: int, last: int) -> None:
    """Commit rows first..last into ledger."""
    cluster.safe_sql("INSERT INTO ledger SELECT g, 'row ' || g FROM generate_series(%s::int, %s::int) g", [first, last],
                     dbname="postgres")  # fmt: skip


def _truth(cluster) -> dict:
    """The fingerprint of the postgres database (where the ledger lives) now."""
    with cluster.connect() as conn:
        return fingerprint(conn).to_dict()


def build_repo(make_cluster, name: str, root: Path, key: Path | None) -> dict:
    """Make one repository under root/name; return its manifest entry."""
    repo = root / name
    repo.mkdir()
    url = f"file://{repo}"
    env = {"PGDRILL_KEY_FILE": str(key)} if key else {}
    primary = make_cluster(f"golden-{name}", env=env)
    primary.init(allows_streaming=True)  # archiving starts below: initdb's 2 MB of WAL stays out of the repository
    primary.start()
    primary.safe_sql("ALTER DATABASE template0 IS_TEMPLATE false")
    primary.safe_sql("DROP DATABASE template0")  # a third less to store; nothing here needs it
    primary.safe_sql("CREATE TABLE ledger (id int PRIMARY KEY, note text)")
    primary.safe_sql("SELECT pg_switch_wal()")
    ((current,),) = primary.safe_sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    primary.stop()
    for done in (p.name for p in (primary.data_dir / "pg_wal").iterdir() if len(p.name) == 24 and p.name < current):
        (primary.data_dir / "pg_wal" / "archive_status" / f"{done}.done").touch()  # never archived: not needed
    primary.append_conf({"archive_mode": "on", "archive_command": backup_tools_command("wal-push", "%p", "--repo", url)})
    primary.start()
    _write_rows(primary, 1, 100)
    app_dsn = primary.dsn
    backups = []
    full = cli_ok("backup", "--dsn", primary.dsn, "--repo", url, "--kind", "full", env=env).splitlines()[-1]
    backups.append({"id": full, "kind": "full", "restore": "immediate", "fingerprint": _truth(primary)})
    _write_rows(primary, 101, 200)
    primary.safe_sql("DELETE FROM ledger WHERE id % 7 = 0")
    if primary.pg.major >= 17:
        inc = cli_ok("backup", "--dsn", primary.dsn, "--repo", url, "--kind", "incremental", env=env).splitlines()[-1]
        backups.append({"id": inc, "kind": "incremental", "restore": "immediate", "fingerprint": _truth(primary)})
    logical = cli_ok("backup", "--dsn", app_dsn, "--repo", url, "--kind", "logical", env=env).splitlines()[-1]
    backups.append({"id": logical, "kind": "logical", "restore": "dsn", "fingerprint": _truth(primary)})
    _write_rows(primary, 201, 300)
    primary.safe_sql("UPDATE ledger SET note = note || ' (late)' WHERE id > 250")
    end = _truth(primary)
    primary.archive_current_wal()
    primary.stop()
    backups.append({"id": backups[-2]["id"], "kind": "wal", "restore": "end", "fingerprint": end})
    docs = root / f"docs-{name}"
    for rel, data in DOCS.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_bytes(data)
    bucket = cli_ok("storage", "backup", "--source", str(docs), "--repo", url, "--name", "docs", env=env)
    backups.append({"id": bucket.split()[0], "kind": "bucket", "restore": "storage", "name": "docs",
                    "documents": {rel: hashlib.sha256(data).hexdigest() for rel, data in sorted(DOCS.items())}})  # fmt: skip
    return {"encrypted": key is not None, "backups": backups}


def test_build_golden_repositories(make_cluster, pg_bin):
    out = os.environ.get(OUT_ENV)
    if not out:
        pytest.skip(f"builds the golden repositories only when {OUT_ENV} names an empty output directory")
    root = Path(out)
    key = root / "golden.key"
    key.write_text(generate_key_file_text())
    key.chmod(0o600)
    repos = {"plain": build_repo(make_cluster, "plain", root, None),
             "encrypted": build_repo(make_cluster, "encrypted", root, key)}  # fmt: skip
    for name in repos:
        (root / name / "lock").unlink(missing_ok=True)
    manifest = {"made_with": __version__, "catalog_format": FORMAT_VERSION, "pg_major": pg_bin.major, "repos": repos}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
