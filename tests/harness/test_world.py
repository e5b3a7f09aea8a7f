"""The production-like world drills run in (issue 11 item 1): scram only, passwords only in the suite's 0600
passfile, data in `app` owned by app_owner beside an auth schema; copies and restores keep RLS, functions, triggers."""

from __future__ import annotations

import stat
from datetime import timedelta

import psycopg
import pytest

from fixtures.cluster import Cluster
from fixtures.drill import Drill
from fixtures.methods import FullBackup, LogicalDump
from fixtures.origin import APP_DB, OWNER, SECOND_DB, USER, build_seeded_world
from fixtures.targets import Target
from fixtures.truth import take_truth
from tests.support.secretscan import passwords_of

pytestmark = pytest.mark.integration
AUTH_OBJECTS = """SELECT (SELECT string_agg(policyname, ',') FROM pg_policies WHERE schemaname = 'auth'),
  (SELECT prosecdef FROM pg_proc WHERE oid = 'auth.user_count()'::regprocedure),
  (SELECT string_agg(tgname, ',') FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal),
  (SELECT relrowsecurity FROM pg_class WHERE oid = 'auth.users'::regclass),
  (SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'documents')"""
EXPECTED = ("tenant_isolation", True, "users_touch", True, OWNER)


def world(make_cluster, name: str = "primary", **config) -> Cluster:
    """A started cluster with the seeded world at a small scale."""
    cluster = make_cluster(name)
    cluster.init(password_auth=True, **config)
    cluster.start()
    build_seeded_world(cluster, scale=0.01, seed=7)
    return cluster


def hba_lines(cluster: Cluster) -> list[str]:
    """The pg_hba.conf lines that are rules (no comments, no blank lines)."""
    text = (cluster.data_dir / "pg_hba.conf").read_text()
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_world_has_no_trust_line_and_its_passwords_only_in_the_passfile(make_cluster):
    cluster = world(make_cluster)

    rules = hba_lines(cluster)
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules), rules
    assert not any("trust" in rule for rule in rules)
    assert stat.S_IMODE(cluster.passfile.stat().st_mode) == 0o600
    assert len(passwords_of(cluster.passfile.read_bytes())) == 3  # postgres, app_owner, app_user
    assert "password" not in cluster.dsn and "password" not in cluster.dsn_for(APP_DB, user=USER)
    assert cluster.dbname == APP_DB and cluster.safe_sql("SELECT current_database()") == [(APP_DB,)]
    assert cluster.safe_sql(AUTH_OBJECTS)[0] == EXPECTED
    assert {db for (db,) in cluster.safe_sql("SELECT datname FROM pg_database")} >= {APP_DB, SECOND_DB}

    # without the passfile nobody gets in, not even over the private socket
    for user in ("postgres", OWNER, USER):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(host=str(cluster.socket_dir), port=cluster.port, dbname=APP_DB, user=user,
                            passfile="/dev/null", connect_timeout=5)  # fmt: skip
    # app_user logs in with it and row-level security applies to it
    with cluster.connect(user=USER) as conn:
        conn.execute("SET app.tenant = 't1'")
        seen = conn.execute("SELECT count(*) FROM auth.users").fetchone()[0]
    assert 0 < seen < cluster.safe_sql("SELECT count(*) FROM auth.users")[0][0]


def test_a_copy_of_the_template_is_reached_with_a_copy_of_its_passfile(make_cluster):
    template = world(make_cluster, "template")
    template.stop()
    copy = make_cluster("copy")
    copy.init_from_template(template.data_dir)
    copy.copy_access(template.access)
    copy.start()

    assert copy.passfile != template.passfile and copy.passfile.read_bytes() == template.passfile.read_bytes()
    assert stat.S_IMODE(copy.passfile.stat().st_mode) == 0o600
    assert hba_lines(copy) == hba_lines(template)
    with copy.connect(user=USER) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (USER, APP_DB)


@pytest.mark.parametrize("method", [FullBackup, LogicalDump], ids=["full", "logical"])
def test_a_restore_keeps_rls_function_trigger_and_every_database(make_cluster, pg_bin, tmp_path, method):
    record = Drill("world", None, Target("world", timedelta(hours=1), timedelta(minutes=5)))
    tool = method(pg=pg_bin, make_cluster=make_cluster, repo_dir=tmp_path / "repo", recorder=record.recorder)
    primary = world(make_cluster, **tool.primary_config())
    truth = take_truth(primary.connect, primary.dbname)
    tool.protect(primary)
    tool.flush(primary)

    restored = tool.restore("restored")

    assert restored.passfile is not None and restored.dbname == APP_DB
    assert all(rule[-1] == "scram-sha-256" for rule in hba_lines(restored))  # reached by password, never by trust
    assert restored.safe_sql(AUTH_OBJECTS)[0] == EXPECTED
    assert take_truth(restored.connect, restored.dbname).diff(truth) == []
    # and a restore that lost the policy would be named by the drill's schema check
    restored.safe_sql("DROP POLICY tenant_isolation ON auth.users")
    lost = take_truth(restored.connect, restored.dbname).diff(truth)
    assert any("RLS policy auth.users.tenant_isolation missing" in line for line in lost), lost
    assert any(cmd[:2] == ["backup-tools", "backup"] for cmd in record.method_commands)
    assert not any("password" in arg for cmd in record.method_commands for arg in cmd)
