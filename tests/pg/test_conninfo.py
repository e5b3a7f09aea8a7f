"""Connection strings parsed without psycopg read exactly as libpq (psycopg's conninfo_to_dict) reads them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from backup_tools.errors import UsageError
from backup_tools.pg.conninfo import ConnInfo, make_conninfo

CASES = [
    "",
    "host=/tmp/sock port=5432 dbname=postgres user=postgres",
    "  host = db.example  port= 6432\tdbname =app  ",
    "host=db password='s3cr et' user=o\\'neil",
    r"password='a\'b\\c' dbname='my db'",
    "dbname='' host=h",
    "host=a,b port=1,2 target_session_attrs=read-write sslmode=require",
    "postgresql://u:p%40ss@h:5433/db?sslmode=require",
    "dbname='host=other port=1'",
    "application_name=x keepalives=1 replication=database",
]


@pytest.mark.parametrize("dsn", CASES)
def test_same_parameters_as_libpq(dsn: str) -> None:
    info = ConnInfo.parse(dsn)
    expected = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    password = expected.pop("password", None)
    assert info.params == expected and info.password == (password or None)
    assert {k: str(v) for k, v in conninfo_to_dict(info.dsn()).items()} == conninfo_to_dict(dsn)


@pytest.mark.parametrize("dsn", ["host", "host=x nonsense=1", "host='unterminated", "=x", "password='it''s' host=x"])
def test_malformed_strings_are_usage_errors_from_libpq(dsn: str) -> None:
    with pytest.raises(UsageError, match="invalid connection string"):
        ConnInfo.parse(dsn)


@given(st.dictionaries(st.sampled_from(["host", "dbname", "user", "password", "options", "application_name"]),
                       st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                               max_size=12)))  # fmt: skip
def test_any_quoted_values_round_trip(params: dict[str, str]) -> None:
    text = make_conninfo(params)
    assert {k: str(v) for k, v in conninfo_to_dict(text).items()} == params
    info = ConnInfo.parse(text)
    assert info.params == {k: v for k, v in params.items() if k != "password"}


def test_a_physical_backup_path_does_not_load_psycopg() -> None:
    code = ("import sys; import backup_tools.backup.physical, backup_tools.pg.conninfo as c; "
            "c.ConnInfo.parse('host=/tmp port=5 password=x'); print('psycopg' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
