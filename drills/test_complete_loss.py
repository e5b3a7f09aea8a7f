"""Complete data loss: the server and its data directory are gone; rebuild from the off-site repository alone."""

import pytest

from fixtures.faults import wipe_cluster
from fixtures.origin import build_seeded_world

OFFSITE = ["full@s3", "incremental@s3", "sync-streaming@s3", "logical@s3"]


@pytest.mark.drill("complete-loss")
@pytest.mark.parametrize("method", OFFSITE, indirect=True)
def test_rebuild_from_the_offsite_repository(protected_primary, method, drill):
    # Given a seeded primary whose backups and WAL go to the off-site S3 bucket, the ticker committing
    primary = protected_primary
    truth = drill.snapshot(primary)

    # When the server is killed and its data directory deleted, with no chance to archive the current WAL
    drill.mark_failure()
    wipe_cluster(primary)
    drill.ticker.stop()
    assert not primary.data_dir.exists()

    # Then a new cluster is built only from what the off-site repository holds
    rebuilt = method.restore("rebuilt")
    drill.verify(rebuilt, expected=truth)
    drill.notes["newest_wal_in_repository"] = max(
        (k.rsplit("/", 1)[-1] for k in method.repo.list("wal/")), default=None
    )
    drill.finish(rebuilt)


@pytest.mark.slow
@pytest.mark.drill("complete-loss", method="full@s3-scale-10")
@pytest.mark.parametrize("method", ["full@s3"], indirect=True)
def test_rebuild_at_ten_times_the_default_scale(make_cluster, method, drill, seed):
    # Given a primary seeded at 10x the default scale (about 1M rows), backed up to the off-site bucket
    primary = make_cluster("primary", env=method.env)
    primary.init(password_auth=True, **method.primary_config())
    primary.start()
    drill.notes["seed"] = build_seeded_world(primary, scale=10.0, seed=seed)[0].rows
    drill.start_ticker(primary)
    method.protect(primary)
    truth = drill.snapshot(primary)

    # When the server and its data directory are destroyed
    drill.mark_failure()
    wipe_cluster(primary)
    drill.ticker.stop()

    # Then a new cluster is built from the off-site repository alone, within the target at this size
    rebuilt = method.restore("rebuilt")
    drill.verify(rebuilt, expected=truth)
    drill.finish(rebuilt)
