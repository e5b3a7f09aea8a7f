"""Restore test of the team's pg_dump files (--source-dumps, read-only) or, without it, a stand-in's nightly dump."""

import time
from datetime import UTC, datetime

import pytest

from backup_tools.pg.run import redact, run
from fixtures import dumprestore
from fixtures.drill import TEAM_BACKUP
from fixtures.dumps import DumpError, fetch_file, open_source
from fixtures.teamsource import check_restored, skip_stand_in
from fixtures.ticker import Ticker


@pytest.fixture
def dump_source(request, pytestconfig, pg_bin, tmp_path):
    """The team's dumps (--source-dumps), or a stand-in: a seeded, written-to server's pg_dump -Fc in a directory."""
    url = pytestconfig.getoption("source_dumps")
    try:
        if url:
            return open_source(url)
        skip_stand_in(pytestconfig)
        primary = request.getfixturevalue("seeded_cluster")("team-primary")
        ticker = Ticker(primary.connect).start()  # the application writes until the nightly dump
        time.sleep(1.0)
        ticker.stop()
        folder = tmp_path / "team-dumps"
        folder.mkdir()
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
        run([pg_bin.tool("pg_dump"), "-Fc", "-f", folder / f"postgres-{stamp}.dump", "-d", primary.dsn])
        return open_source(str(folder))
    except DumpError as e:
        pytest.fail(f"restore-test/source-dumps: {e}", pytrace=False)


@pytest.mark.drill("restore-test", method="source-dumps")
def test_restore_the_teams_dumps(pytestconfig, dump_source, drill, make_cluster, pg_bin, tmp_path):
    # Given the dumps in the source, and the one to test: latest, random or a given name
    before = dump_source.state()
    try:
        which = pytestconfig.getoption("source_backup") if pytestconfig.getoption("source_dumps") else "latest"
        artifact = dump_source.choose(which)
    except DumpError as e:
        pytest.fail(f"restore-test/source-dumps: {e}", pytrace=False)
    if pytestconfig.getoption("source_dumps"):  # the team's dumps, not the stand-in: this restore evidences controls
        drill.set_source(TEAM_BACKUP, kind="pg_dump", location=dump_source.url, backup=artifact.name,
                         created_at=artifact.taken_at)  # fmt: skip
    work = tmp_path / "fetched"
    work.mkdir()

    # When it is fetched, recognised by its content, and restored into an ephemeral cluster with the roles it needs
    drill.mark_failure()
    restored = make_cluster("restored")
    try:
        with drill.phase("fetch", size_bytes=artifact.size):
            local = dump_source.fetch(artifact, work)
            dump = dumprestore.recognise(local, label=f"{artifact.name} in {redact(dump_source.url)}", work=work,
                             pg_restore=pg_bin.tool("pg_restore"))  # fmt: skip
        dumprestore.check_version(dump, pg_bin.major, pg_bin.bindir)
        with drill.phase("init + start"):
            restored.init()
            restored.start()
        missing = dumprestore.missing_extensions(restored, dump)
        if missing:
            raise DumpError(f"dump {dump.label} needs extension(s) {', '.join(missing)}, which PostgreSQL "
                            f"{pg_bin.major} in {pg_bin.bindir} does not have: install them for these binaries (e.g. "
                            f"apt install postgresql-{pg_bin.major}-<extension>) or point --pg-bin at binaries that have them")  # fmt: skip
        with drill.phase("roles"):
            drill.notes["roles"] = _roles(pytestconfig, restored, dump, work)
        with drill.phase("pg_restore", size_bytes=artifact.size):
            dumprestore.restore(restored, dump, database=dump.database or _name_of(artifact.name))
    except DumpError as e:
        pytest.fail(f"restore-test/source-dumps: {e}", pytrace=False)
    drill.notes["dump"] = {"name": artifact.name, "format": dump.fmt, "size_bytes": artifact.size,
                           "database": dump.database, "dumped_from": dump.dumped_from,
                           "time_from": artifact.time_from, "extensions": sorted(dump.extensions)}  # fmt: skip

    # Then integrity and the team's checks pass, and RPO is the age of the newest data in the restored copy
    check_restored(drill, restored, config=pytestconfig, backup_time=artifact.taken_at)
    drill.finish(restored)
    assert dump_source.state() == before, f"the source {redact(dump_source.url)} changed during the drill"


def _roles(config, restored, dump, work):
    """Roles from --source-globals, else each role the dump references created NOLOGIN (and the report says so)."""
    url = config.getoption("source_globals")
    if url:
        path = fetch_file(url, work)
        return {"from": "globals file", "roles": dumprestore.apply_globals(restored, path, label=redact(url), superuser=restored.superuser)}
    made = dumprestore.create_missing_roles(restored, dump.roles)
    return {"from": "dump references", "created_nologin": made} | ({} if not made else {
            "note": "no --source-globals given: roles the dump references were created NOLOGIN without passwords or "
                    "memberships; give pg_dumpall --globals-only output to restore them as they are"})  # fmt: skip


def _name_of(name):
    """The database a plain dump without CREATE DATABASE goes into: its file name up to the first date or dot."""
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
    for i, ch in enumerate(stem):
        if ch.isdigit():
            return stem[:i].rstrip("-_") or "restored"
    return stem or "restored"
