"""The safe tool runner and connection handling, without a server: pipelines, time-outs, secrets, versions."""

from __future__ import annotations

import gzip
import os
import stat
import time
from pathlib import Path

import pytest

from backup_tools.errors import BinaryNotFound, ConnectionFailed, ToolFailed, UsageError, VersionMismatch
from backup_tools.pg.conn import ConnInfo, connect, libpq_env, redact_dsn
from backup_tools.pg.ports import free_port
from backup_tools.pg.run import check_tool_version, error_summary, redact, run, run_pipeline


def test_a_failing_first_stage_fails_the_pipeline_even_when_the_last_succeeds():
    stages = [["sh", "-c", "echo partial; echo 'pg_dump: error: connection lost' >&2; exit 3"], ["gzip"]]
    with pytest.raises(
        ToolFailed, match=r"sh failed \(exit 3\): pg_dump: error: connection lost \(stage 1 of `sh \| gzip`"
    ):
        run_pipeline(stages, consumer=lambda out: gzip.decompress(out.read()))


def test_pipeline_streams_into_the_consumer_and_reports_each_stage():
    result = run_pipeline(
        [["sh", "-c", "seq 1 100000"], ["gzip", "-1"]], consumer=lambda out: gzip.decompress(out.read())
    )
    assert result.value.splitlines()[-1] == b"100000" and len(result.value.splitlines()) == 100000
    assert [(s.program, s.returncode) for s in result.stages] == [("sh", 0), ("gzip", 0)]


@pytest.mark.skipif(not Path("/proc/sys/fs/pipe-max-size").exists(), reason="pipe sizes are set on Linux only")
def test_the_consumer_reads_a_pipe_widened_to_a_chunk():
    import fcntl

    from backup_tools.streams import CHUNK

    allowed = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    sizes = run_pipeline([["true"]], consumer=lambda out: fcntl.fcntl(out.fileno(), fcntl.F_GETPIPE_SZ)).value
    assert sizes >= min(CHUNK, allowed) > 65536


def test_a_failing_last_stage_is_named():
    with pytest.raises(ToolFailed, match=r"sh failed \(exit 2\): ERROR: disk full \(stage 2 of `printf \| sh`"):
        run_pipeline([["printf", "x"], ["sh", "-c", "cat >/dev/null; echo 'ERROR: disk full' >&2; exit 2"]])


def test_stdin_is_closed_so_nothing_can_prompt():
    started = time.monotonic()
    assert run_pipeline([["cat"]]).value == b""  # would block forever reading a terminal
    assert run(["cat"]).stdout == ""
    assert time.monotonic() - started < 5


def test_time_out_kills_every_stage():
    started = time.monotonic()
    with pytest.raises(ToolFailed, match=r"`sleep \| cat` did not finish within 0.5 s and was stopped"):
        run_pipeline([["sleep", "30"], ["cat"]], timeout=0.5)
    assert time.monotonic() - started < 5


def test_a_consumer_error_stops_the_stages_and_propagates():
    def broken(out):
        out.read(10)
        raise RuntimeError("repository went away")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="repository went away"):
        run_pipeline([["yes"]], consumer=broken)
    assert time.monotonic() - started < 5


def test_a_consumer_error_caused_by_a_dying_stage_reports_the_stage():
    def strict(out):
        if not out.read():
            raise ValueError("empty stream")

    with pytest.raises(ToolFailed, match=r"sh failed \(exit 4\): FATAL: no such database") as info:
        run_pipeline([["sh", "-c", "echo 'FATAL: no such database' >&2; exit 4"]], consumer=strict)
    assert isinstance(info.value.__cause__, ValueError)


def test_missing_program_is_binary_not_found():
    with pytest.raises(BinaryNotFound, match="could not run /nonexistent/pg_dump"):
        run_pipeline([["/nonexistent/pg_dump", "--version"]])
    with pytest.raises(BinaryNotFound, match="/nonexistent/pg_dump not found"):
        run(["/nonexistent/pg_dump"])


def test_env_none_removes_an_inherited_variable(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "inherited-secret")
    out = run(["sh", "-c", 'echo "[${PGPASSWORD-unset}]"'], env={"PGPASSWORD": None, "PGHOST": "/tmp"}).stdout
    assert out == "[unset]\n"


def test_errors_show_error_lines_and_hide_passwords():
    text = "pg_dump: connecting\npg_dump: error: connection to server failed: password=abc123 rejected\nbye"
    assert error_summary(text) == "pg_dump: error: connection to server failed: password=*** rejected"
    assert error_summary("a\nb\nc") == "a / b / c"
    with pytest.raises(ToolFailed) as info:
        run(["sh", "-c", "echo 'FATAL: bad postgresql://u:s3cr3t@h/db' >&2; exit 1"])
    assert "s3cr3t" not in str(info.value) and "postgresql://u:***@h/db" in str(info.value)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("host=h user=u password=s3cr3t dbname=d", "password=***"),
        ("host=h password='two words' dbname=d", "password=***"),
        ("postgresql://u:s3cr3t@h:5432/d", "password=***"),
        ("host=h port", "host=h port"),  # unparsable, but nothing secret in it
        ("postgresql://u:s3cr3t@h/d?bogus=1", "postgresql://u:***@h"),
    ],
)
def test_dsns_are_redacted(dsn, shown):
    text = redact_dsn(dsn)
    assert "s3cr3t" not in text and "two words" not in text and shown in text
    assert "s3cr3t" not in redact(dsn)


def test_libpq_env_uses_a_private_passfile_and_never_pgpassword(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "inherited")
    with libpq_env("host=/tmp port=5433 dbname=app user=alice password='a:b\\\\c'") as env:
        passfile = Path(env["PGPASSFILE"])
        assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
        assert stat.S_IMODE(passfile.parent.stat().st_mode) == 0o700
        assert passfile.read_text() == "*:*:*:*:a\\:b\\\\c\n"
        assert env["PGPASSWORD"] is None
        assert env | {"PGPASSFILE": "x"} == {"PGHOST": "/tmp", "PGPORT": "5433", "PGDATABASE": "app", "PGUSER": "alice",
                                             "PGCONNECT_TIMEOUT": "10", "PGPASSFILE": "x", "PGPASSWORD": None}  # fmt: skip
        assert not any("a:b" in str(v) for k, v in env.items() if k != "PGPASSFILE")
    assert not passfile.exists() and not passfile.parent.exists()
    with libpq_env("host=/tmp dbname=app") as env:
        assert "PGPASSFILE" not in env and "PGPASSWORD" not in env


def test_parameters_without_an_environment_variable_are_refused():
    with pytest.raises(UsageError, match="keepalives .* service file"), libpq_env("host=h keepalives=1"):
        pass


def test_conninfo_keeps_the_password_apart():
    info = ConnInfo.parse("postgresql://alice:pw%3Ax@db.example:6432/app?sslmode=require")
    assert info.password == "pw:x" and "password" not in info.params
    assert info.redacted() == "user=alice dbname=app host=db.example port=6432 sslmode=require password=***"


def test_unreachable_server_fails_fast_without_the_password():
    dsn = f"host=127.0.0.1 port={free_port()} dbname=x user=u password=hunter2-secret"
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match=r"could not connect to .*password=\*\*\*.*check the host, port") as info:
        connect(dsn)
    assert time.monotonic() - started < 5 and "hunter2" not in str(info.value)


def _fake_tool(tmp_path: Path, output: str) -> Path:
    tool = tmp_path / "pg_dump"
    tool.write_text(f"#!/bin/sh\necho '{output}'\n")
    tool.chmod(0o755)
    return tool


def test_a_tool_older_than_the_server_is_refused(tmp_path):
    tool = _fake_tool(tmp_path, "pg_dump (PostgreSQL) 15.4")
    with pytest.raises(VersionMismatch, match=r"pg_dump 15.4 .* is older than PostgreSQL 18.*--pg-bin/PG_BIN"):
        check_tool_version(tool, 180001)
    assert check_tool_version(tool, 150010) == 15
    assert check_tool_version(tool, 140000) == 15  # newer tools handle older servers
    assert check_tool_version(tool, 90624) == 15  # 9.6 numbering
    with pytest.raises(VersionMismatch, match="older than PostgreSQL 16: it needs 16"):
        check_tool_version(tool, 150000, minimum_major=16)


def test_a_tool_that_is_not_postgresql_is_refused(tmp_path):
    with pytest.raises(BinaryNotFound, match="did not print a PostgreSQL version"):
        check_tool_version(_fake_tool(tmp_path, "hello"), 180000)
    assert os.access(tmp_path / "pg_dump", os.X_OK)
