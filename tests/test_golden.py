"""Golden repositories (tests/golden/data, made by `python -m tests.golden.make_golden`): today's code must verify
them and restore every backup in them to the fingerprint recorded when they were made.

A change to the on-disk format that old repositories cannot follow fails here; a deliberate format change
regenerates the data (docs/reliability.md) and commits it with the change.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_tools.catalog import FORMAT_VERSION
from backup_tools.pg.checks import Fingerprint, fingerprint
from fixtures.cluster import Cluster
from tests.support.repo_ops import cli_ok, restore_fingerprint

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "golden" / "data"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
REGENERATE = "if the format change is deliberate, run `python -m tests.golden.make_golden` and commit tests/golden/data"
# The encrypted repository's full and incremental restore through its "wal" case (incremental + parent + WAL,
# all decrypted); restoring them once more at their own end would add two server starts for little.
CASES = [pytest.param(repo, b, id=f"{repo}-{b['kind']}")
         for repo, doc in sorted(MANIFEST["repos"].items()) for b in doc["backups"]
         if not (doc["encrypted"] and b["restore"] == "immediate")]  # fmt: skip


@pytest.fixture(scope="module")
def logical_target(pg_bin, tmp_path_factory) -> Iterator[Cluster]:
    """One started server that the logical backups restore into (a new database each)."""
    cluster = Cluster("golden-target", pg=pg_bin, base_dir=tmp_path_factory.mktemp("golden-target"))
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.teardown()


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    """A private copy of the golden data (verify records its stamp in catalogs; the checkout stays untouched)."""
    copy = tmp_path_factory.mktemp("golden") / "data"
    shutil.copytree(DATA, copy)
    (copy / "golden.key").chmod(0o600)
    return copy


def keyed(golden: Path, repo: str) -> list[str]:
    """--key-file for the encrypted repository, nothing for the plain one."""
    return ["--key-file", str(golden / "golden.key")] if MANIFEST["repos"][repo]["encrypted"] else []


def needs_same_major(pg_bin) -> None:
    """Physical backups and pg_dump archives restore only with the major they were made with."""
    if pg_bin.major != MANIFEST["pg_major"]:
        pytest.skip(f"golden backups were made with PostgreSQL {MANIFEST['pg_major']}; this run uses {pg_bin.major}")


def test_golden_catalog_format_is_todays():
    assert MANIFEST["catalog_format"] == FORMAT_VERSION, (
        f"catalog format is now {FORMAT_VERSION}, the golden repositories hold {MANIFEST['catalog_format']}; "
        f"keep reading the old format and {REGENERATE}"
    )
    for repo in MANIFEST["repos"]:
        for catalog in (DATA / repo / "backups").glob("*/catalog.json"):
            assert json.loads(catalog.read_text())["format"] == MANIFEST["catalog_format"], catalog


@pytest.mark.parametrize("repo", sorted(MANIFEST["repos"]))
def test_golden_repository_verifies(golden, repo, pg_bin):
    needs_same_major(pg_bin)
    url = f"file://{golden / repo}"
    listed = json.loads(cli_ok("list", "--repo", url, "--json"))
    want = {b["id"] for b in MANIFEST["repos"][repo]["backups"] if b["kind"] in ("full", "incremental", "logical")}
    assert {b["id"] for b in listed if b["status"] == "DONE"} == want, REGENERATE
    out = cli_ok("verify", "--repo", url, "--backup", "all", *keyed(golden, repo))
    assert out.count("OK ") == len(want), out
    bucket = next(b for b in MANIFEST["repos"][repo]["backups"] if b["kind"] == "bucket")
    out = cli_ok("storage", "verify", "--repo", url, "--name", bucket["name"], "--backup", bucket["id"],
                 *keyed(golden, repo))  # fmt: skip
    assert out.startswith("OK "), out


@pytest.mark.parametrize(("repo", "backup"), CASES)
def test_golden_backup_restores_to_its_recorded_fingerprint(golden, repo, backup, pg_bin, logical_target, tmp_path):
    url, key = f"file://{golden / repo}", keyed(golden, repo)
    env = {"PGDRILL_KEY_FILE": key[1]} if key else {}
    if backup["restore"] == "storage":
        out = tmp_path / "docs"
        cli_ok("storage", "restore", "--repo", url, "--name", backup["name"], "--backup", backup["id"], "--to",
               str(out), *key)  # fmt: skip
        got = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in out.rglob("*") if p.is_file()}  # fmt: skip
        assert got == backup["documents"]
        return
    needs_same_major(pg_bin)
    want = Fingerprint.from_dict(backup["fingerprint"])
    if backup["restore"] == "dsn":
        logical_target.safe_sql(f"CREATE DATABASE restored_{repo}")
        dsn = logical_target.dsn.replace("dbname=postgres", f"dbname=restored_{repo}")
        cli_ok("restore", "--repo", url, "--backup", backup["id"], "--dsn", dsn, *key)
        with logical_target.connect(dbname=f"restored_{repo}") as conn:
            got = fingerprint(conn)
    else:
        got = restore_fingerprint(url, backup["id"], tmp_path, pg=pg_bin, env=env,
                                  immediate=backup["restore"] == "immediate")  # fmt: skip
    assert got.diff(want) == [] and got == want, REGENERATE
