"""Regional outage: the primary region (its cluster and its bucket) is unreachable; recover in the DR region."""

import json
import time
from datetime import datetime

import pytest

from fixtures.faultproxy import fault_proxy


@pytest.mark.drill("regional-outage", method="dr-copy")
def test_restore_in_dr_region_from_the_copied_repository(seeded_cluster, make_method, s3, drill):
    # Given a primary archiving to its region's bucket over the region's link (a proxy), with a full backup
    with fault_proxy(s3.endpoint) as region_link:
        home = make_method("full", where=s3.primary_region, endpoint=region_link.url)
        primary = seeded_cluster("primary", env=home.env, **home.primary_config())
        drill.start_ticker(primary)
        home.protect(primary)
        time.sleep(1.0)
        truth = drill.snapshot(primary)

        # And the DR copy job has copied the backup and its WAL to the DR region's bucket
        dr = make_method("full", where=s3.dr_region)
        dr.taken, dr.origin = home.taken, home.origin  # the record lists the backups as the DR repository holds them
        home.flush(primary)
        copied = json.loads(dr.backup_tools("copy", "--repo", home.repo_url, "--to-repo", dr.repo_url, "--json").stdout)
        drill.notes["copy"] = {k: copied.get(k) for k in ("backups", "newest_wal", "wal_lag_seconds", "completed_at")}
        time.sleep(1.0)

        # When the primary region goes dark: its link to the bucket is cut, then its server dies (t_fail: the kill)
        region_link.stop()
        drill.mark_failure()
        primary.kill9()
        drill.ticker.stop()

    # Then a new cluster is restored from the DR bucket alone; RPO includes the copy lag
    restored = dr.restore("dr-restored")
    drill.verify(restored, expected=truth)
    drill.finish(restored)
    since_copy = (drill.failure.t_fail - datetime.fromisoformat(copied["completed_at"])).total_seconds()
    assert drill.rpo.rpo_seconds >= since_copy - 0.5, (
        "restored data newer than the DR copy: the primary bucket was read"
    )


@pytest.mark.drill("regional-outage", method="dr-standby")
def test_promote_the_streaming_standby_in_dr_region(seeded_cluster, make_cluster, drill):
    # Given a primary streaming to a standby in the DR region, the ticker committing
    primary = seeded_cluster("primary", allows_streaming=True)
    primary.backup("base")
    standby = make_cluster("dr-standby")
    standby.init_from_backup(primary, "base", has_streaming=True)
    standby.start()
    primary.poll_query_until("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", "1")
    drill.start_ticker(primary)
    time.sleep(1.5)
    truth = drill.snapshot(primary)

    # When the primary region goes dark, with whatever replication lag there was at that moment
    (lag,) = primary.safe_sql("SELECT pg_current_wal_lsn() - replay_lsn FROM pg_stat_replication")[0]
    drill.notes["replication_lag_bytes_at_failure"] = int(lag or 0)
    drill.mark_failure()
    primary.kill9()
    drill.ticker.stop()

    # Then the DR standby is promoted and serves the data; RPO includes the replication lag
    with drill.phase("promote DR standby"):
        standby.promote()
        standby.wait_for_promotion()
    drill.verify(standby, expected=truth)
    drill.finish(standby)
