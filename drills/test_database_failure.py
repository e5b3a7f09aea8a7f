"""Database failure: the primary's server dies (kill -9); recover by crash recovery or by failing over to a standby."""

import time

import pytest

STANDBYS = [
    pytest.param(False, id="async-standby"),
    pytest.param(True, id="sync-standby"),
]


@pytest.mark.drill("database-failure", method="crash-recovery")
def test_crash_recovery_after_kill9(seeded_cluster, drill):
    # Given a seeded primary and the ticker committing
    primary = seeded_cluster("primary")
    drill.start_ticker(primary)
    time.sleep(1.0)
    truth = drill.snapshot(primary)

    # When the postmaster and all its children are killed with SIGKILL
    drill.mark_failure()
    primary.kill9()
    drill.pause(0.5, why="the ticker meets the dead server")
    drill.ticker.stop()

    # Then starting the same data directory again runs crash recovery and loses no acknowledged commit
    with drill.phase("wait until PID 1 reaps the killed postmaster (test environment; systemd reaps at once)"):
        primary.wait_reaped()
    with drill.phase("crash recovery + start"):
        primary.start()
    drill.verify(primary, expected=truth)
    drill.notes["crash_recovery_log"] = [line for line in primary.log_tail(30).splitlines() if "redo" in line]
    assert drill.ticker.errors > 0, "the ticker never noticed the crash: the failure was not injected"
    drill.finish(primary)
    assert drill.rpo.lost_before_failure == 0


@pytest.mark.drill("database-failure")
@pytest.mark.parametrize("synchronous", STANDBYS)
def test_failover_to_streaming_standby(seeded_cluster, make_cluster, drill, synchronous):
    # Given a primary streaming to a standby (synchronous: commits wait for the standby's flush)
    settings = {"synchronous_standby_names": "standby"} if synchronous else {}
    primary = seeded_cluster("primary", allows_streaming=True, settings=settings)
    primary.backup("base")
    standby = make_cluster("standby")
    standby.init_from_backup(primary, "base", has_streaming=True)
    standby.start()
    primary.poll_query_until("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", "1")
    if synchronous:
        drill.require_zero_loss()
    drill.start_ticker(primary)
    time.sleep(1.0)
    truth = drill.snapshot(primary)

    # When the primary is killed
    drill.mark_failure()
    primary.kill9()
    drill.ticker.stop()

    # Then the standby is promoted and serves every check, with replication lag as the only loss
    with drill.phase("promote standby"):
        standby.promote()
        standby.wait_for_promotion()
    drill.verify(standby, expected=truth)
    drill.finish(standby)
