"""Fingerprints: equal data gives equal fingerprints whatever the insert order; any change shows in the diff."""

import pytest

from backup_tools.pg.checks import Fingerprint, TableFingerprint, fingerprint, foreign_key_violations


def test_diff_reads_like_a_sentence_per_table():
    want = Fingerprint({"users": TableFingerprint(10, "a"), "cases": TableFingerprint(5, "b"), "gone": TableFingerprint(1, "c")})
    got = Fingerprint({"users": TableFingerprint(8, "x"), "cases": TableFingerprint(5, "z"), "extra": TableFingerprint(2, "d")})
    assert got.diff(want) == [
        "cases: same row count (5) but row contents differ",
        "extra: unexpected table (2 rows)",
        "gone: missing (expected 1 rows)",
        "users: 8 rows, expected 10 (-2)",
    ]
    assert want.diff(want) == []


def test_round_trip_through_dict():
    fp = Fingerprint({"t": TableFingerprint(3, "abc")})
    assert Fingerprint.from_dict(fp.to_dict()) == fp


@pytest.mark.integration
def test_fingerprint_ignores_physical_order_but_sees_one_changed_value(make_cluster):
    a, b = make_cluster("a"), make_cluster("b")
    for cluster, order in ((a, "ASC"), (b, "DESC")):
        cluster.init()
        cluster.start()
        cluster.safe_sql("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE nokey (v text)")
        cluster.safe_sql(f"INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g ORDER BY g {order}")
        cluster.safe_sql(f"INSERT INTO nokey SELECT md5(g::text) FROM generate_series(1, 50) g ORDER BY g {order}")
    with a.connect() as ca, b.connect() as cb:
        assert fingerprint(ca).diff(fingerprint(cb)) == []
        b.safe_sql("UPDATE t SET v = 'changed' WHERE id = 250")
        assert fingerprint(cb).diff(fingerprint(ca)) == ["t: same row count (500) but row contents differ"]


@pytest.mark.integration
def test_foreign_key_violations_are_found_after_a_partial_restore(make_cluster):
    c = make_cluster("fk")
    c.init()
    c.start()
    c.safe_sql("CREATE TABLE p (id int PRIMARY KEY); CREATE TABLE ch (id int PRIMARY KEY, p_id int REFERENCES p)")
    c.safe_sql("INSERT INTO p VALUES (1), (2); INSERT INTO ch VALUES (1, 1), (2, 2), (3, NULL)")
    with c.connect() as conn:
        assert foreign_key_violations(conn) == []
        # A table-level restore can bring back children without parents: simulate it.
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM p WHERE id = 2")
        conn.execute("RESET session_replication_role")
        problems = foreign_key_violations(conn)
    assert len(problems) == 1
    assert "ch.p_id -> p: 1 rows without a parent" in problems[0]
