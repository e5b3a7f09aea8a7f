"""The team's checks file (--checks): its shape, each expectation, a missing database, and the data age (RPO)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_tools.pg.bin import PgBin
from fixtures.cluster import Cluster
from fixtures.teamchecks import ChecksFileError, TeamCheck, load_checks, measure_data_age, run_checks

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def server(pg_bin: PgBin, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    """A server with an app database: a users table, created_at in the past, one row dated in the future."""
    cluster = Cluster("checks", pg=pg_bin, base_dir=tmp_path_factory.mktemp("checks"))
    cluster.init()
    cluster.start()
    cluster.safe_sql("CREATE DATABASE app")
    with cluster.connect(dbname="app") as conn:
        conn.execute("CREATE SCHEMA auth")
        conn.execute("CREATE TABLE auth.users (id int PRIMARY KEY, created_at timestamptz NOT NULL)")
        conn.execute("INSERT INTO auth.users SELECT g, now() - g * interval '1 hour' FROM generate_series(1, 10) g")
        conn.execute("CREATE TABLE events (id int, inserted_at timestamp, scheduled_at timestamptz)")
        conn.execute("INSERT INTO events VALUES (1, (now() - interval '30 min') AT TIME ZONE 'UTC', now() + interval '1 day'),"
                     " (2, (now() + interval '5 days') AT TIME ZONE 'UTC', now())")  # fmt: skip
    yield cluster
    cluster.teardown()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "checks.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("[[checks]]\nname = 'a'\nsql = 'select 1'\nmin_rows = 1\n", 'needs database = "..."'),
    ("[[checks]]\nname = 'a'\ndatabase = 'app'\nsql = 'select 1'\n", "give exactly one expectation"),
    ("[[checks]]\nname = 'a'\ndatabase = 'app'\nsql = 'select 1'\nmin_rows = 1\nempty = true\n", "exactly one"),
    ("[[checks]]\nname = 'a'\ndatabase = 'app'\nsql = 'select 1'\nmax_age = 'soon'\n", "not a duration"),
    ("[[checks]]\nname = 'a'\ndatabase = 'app'\nsql = 'select 1'\nmin_rows = -1\n", "whole number"),
    ("[[checks]]\nname = 'a'\ndatabase = 'app'\nsql = 'select 1'\nmin_rows = 1\nmin_row = 2\n", "unknown keys"),
    ("[data_age]\ndatabase = 'app'\n", "[data_age] needs exactly"),
    ("[check]\nname = 'a'\n", "unknown section"),
    ("checks = [", "is not valid TOML"),
], ids=["no-database", "no-expectation", "two-expectations", "bad-age", "negative", "typo", "age-no-sql", "section",
        "toml"])  # fmt: skip
def test_a_bad_checks_file_names_the_file_and_the_problem(tmp_path, text, message):
    with pytest.raises(ChecksFileError, match="checks file .*") as e:
        load_checks(write(tmp_path, text))
    assert message in str(e.value) and str(tmp_path / "checks.toml") in str(e.value)


@pytest.mark.parametrize(("expect", "value", "rows", "passed", "detail"), [
    ("min_rows", 3, [(1,), (2,)], False, "2 rows (expected at least 3)"),
    ("min_rows", 2, [(1,), (2,)], True, "2 rows (expected at least 2)"),
    ("empty", True, [(1,)], False, "1 rows (expected none)"),
    ("empty", False, [], False, "0 rows (expected some)"),
    ("equals", 5, [(5,)], True, "value 5 (expected = 5)"),
    ("equals", "on", [("off",)], False, "value off (expected = on)"),
    ("min", 10, [(9,)], False, "value 9 (expected >= 10)"),
    ("max", 10, [(9,)], True, "value 9 (expected <= 10)"),
    ("max", 10, [(None,)], False, "no value (expected <= 10)"),
    ("max_age", timedelta(hours=26), [(NOW - timedelta(hours=27),)], False, "is 27.0 h old (expected younger than"),
    ("max_age", timedelta(hours=26), [(NOW - timedelta(hours=1),)], True, "is 1.0 h old"),
    ("max_age", timedelta(hours=1), [("yesterday",)], False, "is not a timestamp"),
    ("min", 1, [("text",)], False, "cannot be compared"),
])  # fmt: skip
def test_each_expectation_says_the_value_and_what_was_expected(expect, value, rows, passed, detail):
    ok, said = TeamCheck("c", "app", "select", expect, value).evaluate(rows, NOW)
    assert ok is passed and detail in said


def test_checks_run_as_superuser_and_a_missing_database_fails_naming_it(server, tmp_path):
    checks = load_checks(write(tmp_path, """
[[checks]]
name = "ten users"
database = "app"
sql = "select id from auth.users"
min_rows = 10
[[checks]]
name = "billing has invoices"
database = "billing"
sql = "select 1"
min_rows = 1
[[checks]]
name = "broken sql"
database = "app"
sql = "select nope from auth.users"
empty = true
"""))
    got = {c.name: c for c in run_checks(server, checks, ["app", "postgres"])}
    assert got["team: ten users"].passed
    assert not got["team: billing has invoices"].passed
    assert "database 'billing' is not in the restored backup (it has app, postgres)" in got["team: billing has invoices"].detail
    assert not got["team: broken sql"].passed and 'column "nope" does not exist' in got["team: broken sql"].detail


def test_data_age_is_the_newest_past_timestamp_in_created_at_like_columns(server, tmp_path):
    age = measure_data_age(server, ["app"])
    assert age.columns == 2 and age.ignored_future == 1  # auth.users.created_at, events.inserted_at (not scheduled_at)
    assert timedelta(minutes=29) < datetime.now(UTC) - age.newest < timedelta(minutes=31)
    query = load_checks(write(tmp_path, "[data_age]\ndatabase = 'app'\nsql = 'select max(created_at) from auth.users'\n"))
    own = measure_data_age(server, ["app"], query.data_age)
    assert timedelta(minutes=59) < datetime.now(UTC) - own.newest < timedelta(minutes=61)
