"""Restore tests of a team's pg_dump files, run as a user runs them: `pytest drills -k restore_test --source-dumps …`
against dumps of a password-protected stand-in production server (started here, not by the drill fixtures)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backup_tools.pg.bin import PgBin
from fixtures import dumprestore
from fixtures.cluster import Cluster
from fixtures.dumps import DumpError, open_source
from tests.support.production import FORMATS, USERS, Production, run_drill, snapshot, start_production

PG15 = Path("/usr/lib/postgresql/15/bin")
CHECKS = f"""
[[checks]]
name = "enough users"
database = "app"
sql = "select id from auth.users"
min_rows = {USERS}

[[checks]]
name = "fresh messages"
database = "app"
sql = "select max(created_at) from public.messages"
max_age = "26h"

[[checks]]
name = "no orphaned messages"
database = "app"
sql = "select m.id from messages m left join auth.users u on u.id = m.user_id where u.id is null"
empty = true
"""
TEAM_TEST = """
def test_policy_survived(restored):
    with restored.connect("app") as conn:
        assert conn.execute("select count(*) from pg_policies where policyname = 'own_row'").fetchone()[0] == 1
"""


@pytest.fixture(scope="module")
def production(pg_bin: PgBin, tmp_path_factory: pytest.TempPathFactory) -> Production:
    """The stand-in production server for this module."""
    prod = start_production(pg_bin, tmp_path_factory.mktemp("prod"))
    yield prod
    prod.cluster.teardown()


@pytest.fixture(scope="module")
def dumps(production: Production, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One dump per format, and the globals, in their own directory each (as separate backup jobs would write)."""
    base = tmp_path_factory.mktemp("dumps")
    out = {}
    for fmt in FORMATS:
        (base / fmt).mkdir()
        out[fmt] = production.dump(base / fmt, fmt)
    out["globals"] = production.dump_globals(base / "globals.sql")
    return out


def test_custom_dump_in_s3_with_globals_checks_and_pytest_checks(dumps, s3, s3_prefix, tmp_path):
    # Given an S3 prefix holding an older and a newer custom dump and the globals, and the team's checks
    client, bucket = s3.client(), s3.bucket(s3.primary_region)
    client.upload_file(str(dumps["custom"]), bucket, f"{s3_prefix}/app-2026-11-29T020000.dump")
    client.upload_file(str(dumps["custom"]), bucket, f"{s3_prefix}/app-2026-11-30T020000.dump")
    client.upload_file(str(dumps["globals"]), bucket, f"{s3_prefix}/globals.sql")
    before = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=bucket, Prefix=s3_prefix)["Contents"]}
    (tmp_path / "checks.toml").write_text(CHECKS)
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "test_team.py").write_text(TEAM_TEST)

    # When the restore test runs as README says
    done, record = run_drill(tmp_path, "--source-dumps", f"s3://{bucket}/{s3_prefix}",
                             "--source-globals", f"s3://{bucket}/{s3_prefix}/globals.sql",
                             "--checks", str(tmp_path / "checks.toml"), "--checks-dir", str(tmp_path / "team"),
                             env=s3.env())  # fmt: skip

    # Then it passes with numeric RTO and RPO, the newest dump chosen, every team check named, S3 untouched
    assert done.returncode == 0, done.stdout[-3000:]
    assert record["verdict"] == "pass"
    assert record["rto_seconds"] > 0 and record["rpo_basis"] == "data age"
    assert 0 <= record["rpo_seconds"] < 3600, record["notes"]["data_age"]
    assert record["source"]["kind"] == "pg_dump" and record["source"]["backup"] == "app-2026-11-30T020000.dump"
    assert record["data_source"] == "team-backup"
    names = {c["name"]: c for c in record["checks"]}
    assert {"team: enough users", "team: fresh messages", "team: no orphaned messages",
            "team test: test_policy_survived"} <= set(names)  # fmt: skip
    assert all(c["passed"] for c in record["checks"]), record["checks"]
    assert "app_user" in record["notes"]["roles"]["roles"]
    assert {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=bucket, Prefix=s3_prefix)["Contents"]} == before


def test_sql_gz_in_a_directory_without_globals_creates_roles_nologin(dumps, tmp_path):
    folder = dumps["gzip"].parent
    before = snapshot(folder)
    done, record = run_drill(tmp_path, "--source-dumps", f"file://{folder}")
    assert done.returncode == 0, done.stdout[-3000:]
    assert record["notes"]["dump"]["format"] == "plain" and record["rpo_seconds"] is not None
    assert record["notes"]["roles"]["created_nologin"] == ["app_owner", "app_user"]
    assert "NOLOGIN" in record["notes"]["roles"]["note"]
    assert snapshot(folder) == before


def test_a_team_check_not_met_fails_the_drill_naming_it(dumps, tmp_path):
    (tmp_path / "checks.toml").write_text(CHECKS.replace(f"min_rows = {USERS}", "min_rows = 1000000"))
    done, record = run_drill(tmp_path, "--source-dumps", str(dumps["custom"].parent), "--checks", str(tmp_path / "checks.toml"))
    assert done.returncode == 1
    assert record["verdict"] == "fail"
    assert f"team: enough users failed: {USERS} rows (expected at least 1000000)" in record["reason"]


def test_a_truncated_dump_fails_in_one_line_naming_the_source(dumps, tmp_path):
    folder = tmp_path / "damaged"
    folder.mkdir()
    data = dumps["custom"].read_bytes()
    (folder / "app-2026-11-30T020000.dump").write_bytes(data[: len(data) // 2])
    before = snapshot(folder)
    done, record = run_drill(tmp_path, "--source-dumps", str(folder))
    assert done.returncode == 1
    assert snapshot(folder) == before, "a failed drill wrote to the source"
    assert "app-2026-11-30T020000.dump in " + str(folder) in record["reason"]
    assert "\n" not in record["reason"]


@pytest.mark.skipif(not (PG15 / "pg_restore").exists(), reason="needs PostgreSQL 15 binaries in /usr/lib/postgresql/15/bin")
def test_a_dump_of_a_newer_major_than_the_binaries_is_refused(dumps, tmp_path, pg_bin):
    if pg_bin.major <= 15:
        pytest.skip("the run's binaries are not newer than PostgreSQL 15")
    done, record = run_drill(tmp_path, "--source-dumps", str(dumps["plain"].parent), "--pg-bin", str(PG15))
    assert done.returncode == 1
    assert f"is of PostgreSQL {pg_bin.major}, newer than the binaries" in record["reason"]


@pytest.mark.parametrize("checks", ["[[checks]]\nname = 'x'\n", "not toml ["], ids=["no-database", "not-toml"])
def test_a_bad_checks_file_is_a_usage_error(tmp_path, checks):
    (tmp_path / "checks.toml").write_text(checks)
    done, _ = run_drill(tmp_path, "--source-dumps", str(tmp_path), "--checks", str(tmp_path / "checks.toml"))
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"checks file {tmp_path / 'checks.toml'}" in done.stderr


def test_an_empty_source_is_a_usage_error(tmp_path):
    done, _ = run_drill(tmp_path, "--source-dumps", "")
    assert done.returncode == 4 and "--source-dumps is empty" in done.stderr


# In-process: every format restores; every bad input is one clear error naming the source.


@pytest.fixture
def fresh(pg_bin: PgBin, tmp_path: Path) -> Cluster:
    """An empty started cluster to restore into."""
    cluster = Cluster("restored", pg=pg_bin, base_dir=tmp_path)
    cluster.init()
    cluster.start()
    yield cluster
    cluster.teardown()


@pytest.mark.parametrize("fmt", ["directory", "tar", "plain", "zstd"])
def test_each_format_restores_with_its_roles(dumps, fresh, pg_bin, tmp_path, fmt):
    source = open_source(str(dumps[fmt].parent))
    artifact = source.choose("latest")
    dump = dumprestore.recognise(source.fetch(artifact, tmp_path), label=artifact.name, work=tmp_path,
                                 pg_restore=pg_bin.tool("pg_restore"))  # fmt: skip
    assert dump.roles == {"app_owner", "app_user"} and "citext" in dump.extensions
    assert dumprestore.create_missing_roles(fresh, dump.roles) == ["app_owner", "app_user"]
    dumprestore.restore(fresh, dump, database=dump.database or "app")
    assert fresh.safe_sql("SELECT count(*) FROM auth.users", dbname="app")[0][0] == USERS
    assert fresh.safe_sql("SELECT tableowner FROM pg_tables WHERE tablename = 'messages'", dbname="app")[0][0] == "app_owner"


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("app-2026-11-30.dump", b"", r"is empty \(0 bytes\)"),
    ("app-2026-11-30.dump", b"\x00garbage\xff" * 100, "is not a pg_dump file"),
    ("app-2026-11-30.sql.gz", b"\x1f\x8b\x08\x00garbage", "is truncated or damaged"),
    ("app-2026-11-30.sql.zst", b"\x28\xb5\x2f\xfd\x00\x00", "is truncated or damaged"),
    ("app-2026-11-30.sql", b"--\n-- PostgreSQL database dump\n--\nCREATE TABLE t (a int);\nCOPY t (a) FROM stdin;\n1\n",
     "is truncated: a plain pg_dump ends with"),
], ids=["empty", "garbage", "bad-gzip", "cut-zstd", "cut-plain"])  # fmt: skip
def test_bad_dumps_fail_in_one_line_naming_the_dump(tmp_path, pg_bin, name, content, expected):
    (tmp_path / name).write_bytes(content)
    source = open_source(str(tmp_path))
    artifact = source.choose("latest")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DumpError, match=expected) as e:
        dumprestore.recognise(source.fetch(artifact, work), label=f"{name} in {tmp_path}", work=work,
                              pg_restore=pg_bin.tool("pg_restore"))  # fmt: skip
    assert f"{name} in {tmp_path}" in str(e.value) and "\n" not in str(e.value)


def test_a_cut_plain_dump_of_the_real_server_is_caught(dumps, tmp_path, pg_bin):
    text = dumps["plain"].read_text()
    (tmp_path / "app.sql").write_text(text[: len(text) * 2 // 3])
    with pytest.raises(DumpError, match="is truncated"):
        dumprestore.recognise(tmp_path / "app.sql", label="app.sql", work=tmp_path, pg_restore=pg_bin.tool("pg_restore"))


def test_a_missing_extension_is_named_before_restoring(dumps, fresh, tmp_path, pg_bin):
    text = dumps["plain"].read_text().replace("CREATE EXTENSION IF NOT EXISTS citext",
                                              "CREATE EXTENSION IF NOT EXISTS postgis_not_here", 1)  # fmt: skip
    (tmp_path / "app.sql").write_text(text)
    dump = dumprestore.recognise(tmp_path / "app.sql", label="app.sql", work=tmp_path, pg_restore=pg_bin.tool("pg_restore"))
    assert dumprestore.missing_extensions(fresh, dump) == ["postgis_not_here"]


def test_source_errors_name_the_source(tmp_path, fresh):
    with pytest.raises(DumpError, match=f"no pg_dump artifacts .* in {tmp_path}"):
        open_source(str(tmp_path)).choose("latest")
    with pytest.raises(DumpError, match="no such directory"):
        open_source(str(tmp_path / "missing"))
    (tmp_path / "app-2026-11-30.dump").write_bytes(b"x")
    with pytest.raises(Exception, match="no dump named 'other.dump'"):
        open_source(str(tmp_path)).choose("other.dump")
    (tmp_path / "globals.sql").write_text("CREATE TABLESPACE t LOCATION '/nonexistent/pgdrill';\n")
    with pytest.raises(DumpError, match="globals file g failed: .*ERROR"):
        dumprestore.apply_globals(fresh, tmp_path / "globals.sql", label="g")


def test_an_unreachable_s3_endpoint_names_the_source(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    with pytest.raises(DumpError, match="--source-dumps s3://bucket/prefix: cannot list it"):
        open_source("s3://bucket/prefix").list()


def test_time_in_names_orders_dumps_before_mtime(tmp_path):
    for name in ("app-20261128.dump", "app-2026-11-30T0100.dump", "app-2026-11-29_23-00.dump"):
        (tmp_path / name).write_bytes(b"x")
    shutil.copy(tmp_path / "app-20261128.dump", tmp_path / "notes.txt")
    names = [a.name for a in open_source(str(tmp_path)).list()]
    assert names == ["app-20261128.dump", "app-2026-11-29_23-00.dump", "app-2026-11-30T0100.dump"]
