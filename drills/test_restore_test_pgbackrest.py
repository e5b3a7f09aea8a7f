"""Restore test of the team's pgBackRest stanza (--source-pgbackrest, read-only), restored by pgbackrest itself."""

import json

import pytest

from fixtures.drill import TEAM_BACKUP
from fixtures.pgbackrest import PgBackRestError, Stanza, binaries_for, config_user, prepare_copy, repo_location
from fixtures.teamsource import check_restored


@pytest.fixture
def stanza(pytestconfig):
    """The team's stanza; without --source-pgbackrest the drill is skipped (tests/ drill a PostgreSQL 15 stand-in)."""
    name = pytestconfig.getoption("source_pgbackrest")
    if not name:
        pytest.skip("no --source-pgbackrest STANZA given (tests/harness/test_source_pgbackrest.py drills a stand-in stanza)")
    try:
        return Stanza(name, config=pytestconfig.getoption("pgbackrest_config"))
    except PgBackRestError as e:
        pytest.fail(f"restore-test/source-pgbackrest: {e}", pytrace=False)


@pytest.mark.drill("restore-test", method="source-pgbackrest")
def test_restore_the_teams_pgbackrest_stanza(pytestconfig, stanza, drill, make_cluster, pg_bin):
    # Given the stanza's backups, the one to test (latest, random or a label) and binaries of its major version
    try:
        info = stanza.info()
        which = pytestconfig.getoption("source_backup")
        chosen = stanza.choose(info, which)
        pg = binaries_for(stanza.major(info), pg_bin, stanza.label)
    except PgBackRestError as e:
        pytest.fail(f"restore-test/source-pgbackrest: {e}", pytrace=False)
    drill.set_source(TEAM_BACKUP, kind="pgbackrest", location=repo_location(stanza.config, stanza.name), backup=chosen.label,
                     created_at=chosen.stopped)  # fmt: skip
    before = [b.label for b in stanza.backups(info)]

    # When pgbackrest restores it into a scratch directory and the copy replays the archived WAL and promotes
    drill.mark_failure()
    restored = make_cluster("restored", pg=pg)
    try:
        with drill.phase("pgbackrest restore", size_bytes=chosen.size):
            stanza.restore(chosen, restored.data_dir, latest=which == "latest")
    except PgBackRestError as e:
        pytest.fail(f"restore-test/source-pgbackrest: {e}", pytrace=False)
    prepare_copy(restored, superuser=config_user(stanza.config, stanza.name))
    with drill.phase("WAL replay + start"):
        restored.start()
        restored.wait_for_promotion()
    drill.notes["pgbackrest"] = {"set": chosen.label, "type": chosen.kind, "size_bytes": chosen.size,
                                 "postgresql": pg.version, "stanza_info": json.dumps(info.get("archive", []))[:500]}  # fmt: skip

    # Then integrity and the team's checks pass, and RPO is the age of the newest data after WAL replay
    check_restored(drill, restored, config=pytestconfig, backup_time=chosen.stopped)
    drill.finish(restored)
    assert [b.label for b in stanza.backups(stanza.info())] == before, f"{stanza.label} changed during the drill"
