"""The same drills with every server in a container of the team's image (--image; restores into --restore-image).

The restore test of pg_dump files (--source-dumps, or the stand-in's nightly dump) restores into a fresh container
of --restore-image, so the dump meets the image's roles and extensions.

Each test runs the drill body of its module unchanged; only the clusters differ (fixtures.clusters.make_cluster
makes containers for tests marked `container`). `full`: the primary archives into its container, the suite drains
that to the repository with the host's backup-tools, pg_basebackup runs from the host over TCP, and the restored data
directory and its WAL are copied into a new container that recovers from them. The records name the method with an
`@container` suffix (the drill fixture adds it for tests marked `container`), apart from host drills in the history.
"""

import pytest

from drills import test_accidental_deletion as deletion
from drills import test_complete_loss as loss
from drills import test_predeploy as predeploy
from drills import test_restore_test_dumps as dumps
from drills.test_restore_test_dumps import dump_source  # noqa: F401 (the fixture: --source-dumps, or a stand-in)

pytestmark = pytest.mark.container
SYNC_REFUSED = ("sync-streaming is not offered in containers: the container's world is seeded over SQL after the "
                "image's initdb, and with synchronous_standby_names set from its start every seeding commit waits for "
                "a synchronous standby (the host's pg_receivewal) that attaches only after seeding; run it on the host")


@pytest.fixture(autouse=True)
def container_note(container_provider, drill):
    """Name the image and restore image with their digests on the drill record."""
    drill.notes["container"] = {"image": container_provider.images[container_provider.image].describe(),
                                "restore_image": container_provider.images[container_provider.restore_image].describe()}  # fmt: skip


@pytest.mark.drill("accidental-deletion")
@pytest.mark.parametrize(("method", "harm"), [pytest.param("full", deletion.DROP, id="full-drop-table"),
                                              pytest.param("incremental", deletion.DROP, id="incremental-drop-table"),
                                              pytest.param("sync-streaming", deletion.DROP, id="sync-streaming-drop-table",
                                                           marks=pytest.mark.skip(reason=SYNC_REFUSED)),
                                              pytest.param("logical", deletion.DROP, id="logical-drop-table")],
                         indirect=["method"])  # fmt: skip
def test_restore_to_just_before_the_harmful_commit(protected_primary, method, drill, harm, tmp_path):
    deletion.test_restore_to_just_before_the_harmful_commit(protected_primary, method, drill, harm, tmp_path)


@pytest.mark.drill("accidental-deletion", method="logical-table-restore")
@pytest.mark.parametrize("method", ["logical"], indirect=True)
@pytest.mark.parametrize(("harm", "table"), [pytest.param(deletion.DROP, "documents", id="drop-table")])
def test_table_level_restore_from_logical_backup(protected_primary, method, drill, harm, table):
    deletion.test_table_level_restore_from_logical_backup(protected_primary, method, drill, harm, table)


@pytest.mark.drill("complete-loss")
@pytest.mark.parametrize("method", ["logical@s3"], indirect=True)
def test_rebuild_from_the_offsite_repository(protected_primary, method, drill):
    loss.test_rebuild_from_the_offsite_repository(protected_primary, method, drill)


@pytest.mark.predeploy
@pytest.mark.drill("predeploy-rollback", method="gate")
def test_deploy_gate_backup_restores(request, make_method, drill, pg_bin):
    predeploy.test_deploy_gate_backup_restores(request, make_method, drill, pg_bin)


@pytest.mark.drill("restore-test", method="source-dumps")
def test_restore_the_teams_dumps(pytestconfig, dump_source, drill, make_cluster, pg_bin, tmp_path):  # noqa: F811
    dumps.test_restore_the_teams_dumps(pytestconfig, dump_source, drill, make_cluster, pg_bin, tmp_path)
