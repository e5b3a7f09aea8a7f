"""Restore test of a pgBackRest stanza, run as a user runs it: `pytest drills -k restore_test --source-pgbackrest …`
against a real stanza (stanza-create, full backup, archived WAL) of a PostgreSQL 15 stand-in production server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backup_tools.pg.bin import find_pg_bin
from backup_tools.pg.run import run
from tests.harness.test_source_dumps import CHECKS
from tests.support.production import USERS, Production, snapshot, start_production
from tests.support.production import run_drill as _run_drill

PG15 = Path("/usr/lib/postgresql/15/bin")
pytestmark = [
    pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest is not installed (apt install pgbackrest)"),
    pytest.mark.skipif(not (PG15 / "postgres").exists(), reason="needs PostgreSQL 15 (apt install postgresql-15)"),
]
STANZA = "app"


def run_drill(tmp_path: Path, *args: str):
    """`pytest drills -k restore_the_teams_pgbackrest ARGS` in a fresh process."""
    return _run_drill(tmp_path, *args, select="restore_the_teams_pgbackrest")


@pytest.fixture(scope="module")
def stanza(tmp_path_factory: pytest.TempPathFactory) -> tuple[Production, Path, Path]:
    """A PG15 production archiving to a pgBackRest repository, with one full backup and newer WAL archived after it."""
    base = tmp_path_factory.mktemp("pgbackrest")
    repo, conf = base / "repo", base / "pgbackrest.conf"
    for d in ("repo", "log", "lock"):
        (base / d).mkdir()

    def configure(cluster):
        conf.write_text(f"[global]\nrepo1-path={repo}\nrepo1-retention-full=2\nlog-path={base / 'log'}\n"
                        f"lock-path={base / 'lock'}\nstart-fast=y\n\n"  # no spool-path: the host's default, as teams have it
                        f"[{STANZA}]\npg1-path={cluster.data_dir}\npg1-port={cluster.port}\n"
                        f"pg1-socket-path={cluster.socket_dir}\npg1-user=postgres\n")  # fmt: skip
        return {"archive_mode": "on", "archive_command": f"pgbackrest --config={conf} --stanza={STANZA} archive-push %p"}

    prod = start_production(find_pg_bin(PG15), base, configure=configure)
    pgbackrest = ["pgbackrest", f"--config={conf}", f"--stanza={STANZA}"]
    run([*pgbackrest, "stanza-create"], env=prod.env)
    run([*pgbackrest, "--type=full", "backup"], env=prod.env)
    with prod.cluster.connect(dbname="app", passfile=str(prod.passfile)) as conn:
        conn.execute("INSERT INTO public.messages (user_id, body) VALUES (1, 'after the backup')")
        conn.execute("SELECT pg_switch_wal()")
    run([*pgbackrest, "check"], env=prod.env)  # waits until the switched segment is archived
    yield prod, conf, repo
    prod.cluster.teardown()


def test_the_stanza_restores_with_wal_replayed_and_team_checks(stanza, tmp_path):
    prod, conf, repo = stanza
    (tmp_path / "checks.toml").write_text(CHECKS + '\n[data_age]\ndatabase = "app"\nsql = "select max(created_at) from messages"\n')
    before, pid = snapshot(repo), prod.cluster.postmaster_pid()
    done, record = run_drill(tmp_path, "--source-pgbackrest", STANZA, "--pgbackrest-config", str(conf),
                             "--checks", str(tmp_path / "checks.toml"))  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert record["verdict"] == "pass" and record["rto_seconds"] > 0
    assert record["source"]["kind"] == "pgbackrest" and record["data_source"] == "team-backup"
    assert record["source"]["location"] == f"file://{repo}#stanza={STANZA}"
    assert record["rpo_basis"] == "data age" and record["rpo_seconds"] < record["notes"]["data_age"]["backup_age_seconds"]
    assert all(c["passed"] for c in record["checks"]) and any(c["name"] == "team: enough users" for c in record["checks"])
    assert snapshot(repo) == before, "the pgBackRest repository changed"
    # the configured data directory was left alone: same server running there, no restore or recovery files in it
    assert prod.cluster.postmaster_pid() == pid and prod.cluster.is_running()
    assert not {"recovery.signal", "backup_label", "tablespace_map"} & {p.name for p in prod.cluster.data_dir.iterdir()}
    with prod.cluster.connect(dbname="app", passfile=str(prod.passfile)) as conn:
        assert conn.execute("SELECT count(*) FROM auth.users").fetchone()[0] == USERS


def test_a_stanza_that_does_not_exist_fails_naming_it(stanza, tmp_path):
    _, conf, _ = stanza
    done, record = run_drill(tmp_path, "--source-pgbackrest", "nope", "--pgbackrest-config", str(conf))
    assert done.returncode == 1
    assert "pgBackRest stanza 'nope'" in record["reason"] and "\n" not in record["reason"]


def test_a_failing_team_check_fails_the_stanza_drill(stanza, tmp_path):
    _, conf, _ = stanza
    (tmp_path / "checks.toml").write_text('[[checks]]\nname = "no test users"\ndatabase = "app"\n'
                                          "sql = \"select id from auth.users where email like 'user1%'\"\nempty = true\n")  # fmt: skip
    done, record = run_drill(tmp_path, "--source-pgbackrest", STANZA, "--pgbackrest-config", str(conf),
                             "--checks", str(tmp_path / "checks.toml"))  # fmt: skip
    assert done.returncode == 1
    assert "team: no test users failed" in record["reason"] and "expected none" in record["reason"]
