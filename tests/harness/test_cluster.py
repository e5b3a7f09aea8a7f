"""Cluster verbs against real servers: start/stop/kill9, errors that say what happened."""

import os
import socket

import pytest

from backup_tools.errors import ClusterError, RecoveryError
from backup_tools.restore.pitr import RecoveryTarget

pytestmark = pytest.mark.integration


def test_servers_never_run_as_root(make_cluster):
    assert os.geteuid() != 0, "fixtures.privileges should have dropped root before tests run"
    c = make_cluster("whoami")
    c.init()
    c.start()
    assert c.safe_sql("SELECT current_setting('data_checksums')") == [("on",)]
    assert c.safe_sql("SHOW track_commit_timestamp") == [("on",)]


def test_start_on_a_port_in_use_fails_before_starting(make_cluster):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        c = make_cluster("busy", port=busy.getsockname()[1])
        c.init()
        with pytest.raises(ClusterError, match=rf"port {c.port} on 127.0.0.1 is already in use"):
            c.start()
    assert not c.is_running()


def test_kill9_then_crash_recovery_keeps_committed_rows(make_cluster):
    c = make_cluster("crash")
    c.init()
    c.start()
    c.safe_sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    c.kill9()
    assert not c.is_running()
    c.start()
    assert c.safe_sql("SELECT count(*) FROM t") == [(1000,)]
    assert "database system was interrupted" in c.logfile.read_text()


def test_sql_returns_errors_and_safe_sql_raises_with_the_query(make_cluster):
    c = make_cluster("errors")
    c.init()
    c.start()
    result = c.sql("SELECT * FROM missing_table")
    assert result.rows == [] and "missing_table" in result.error
    with pytest.raises(ClusterError, match='query failed on cluster "errors": SELECT 1/0'):
        c.safe_sql("SELECT 1/0")


def test_poll_timeout_names_query_expected_and_last_value(make_cluster):
    c = make_cluster("poll")
    c.init()
    c.start()
    with pytest.raises(ClusterError) as info:
        c.poll_query_until("SELECT 41 + 1", "43", timeout=0.5)
    assert "SELECT 41 + 1" in str(info.value) and "'43'" in str(info.value) and "'42'" in str(info.value)


def test_recovery_target_never_reached_is_a_clear_error(make_cluster):
    primary = make_cluster("primary")
    primary.init(has_archiving=True)
    primary.start()
    primary.backup("base")
    primary.archive_current_wal()
    restored = make_cluster("restored")
    restored.init_from_backup(primary, "base", has_restoring=True, target=RecoveryTarget(name="never-created"))
    with pytest.raises((RecoveryError, ClusterError)) as info:
        restored.start()
        restored.wait_for_promotion(timeout=60)
    assert "recovery ended before configured recovery target was reached" in str(info.value)


def test_streaming_standby_follows_and_promotes(make_cluster):
    primary = make_cluster("primary")
    primary.init(allows_streaming=True)
    primary.start()
    primary.backup("base")
    standby = make_cluster("standby")
    standby.init_from_backup(primary, "base", has_streaming=True)
    standby.start()
    primary.safe_sql("CREATE TABLE t AS SELECT 1 AS x")
    standby.poll_query_until("SELECT to_regclass('t') IS NOT NULL", "t", timeout=30)
    standby.promote()
    standby.safe_sql("INSERT INTO t VALUES (2)")
    assert standby.safe_sql("SELECT count(*) FROM t") == [(2,)]
