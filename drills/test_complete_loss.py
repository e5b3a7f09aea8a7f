"""Complete data loss: the server and its data directory are gone; rebuild from the off-site repository alone."""

import pytest

from fixtures.faults import wipe_cluster

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
