"""Seeded data is deterministic from the seed and consistent."""

import pytest

from backup_tools.pg.checks import fingerprint, foreign_key_violations
from fixtures.seed import APP_TABLES, row_counts, seed_database

pytestmark = pytest.mark.integration


def test_same_seed_same_rows_other_seed_other_rows(make_cluster):
    prints = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        c = make_cluster(name)
        c.init()
        c.start()
        with c.connect() as conn:
            result = seed_database(conn, scale=0.05, seed=seed)
            prints.append(fingerprint(conn))
            assert foreign_key_violations(conn) == []
        assert result.rows == row_counts(0.05)
        assert set(result.rows) == set(APP_TABLES)
        c.stop()
    assert prints[0].diff(prints[1]) == []
    assert prints[0].diff(prints[2]) != []


def test_scale_sets_the_size():
    assert row_counts(2.0)["chat_messages"] == 2 * row_counts(1.0)["chat_messages"]
    assert sum(row_counts(1.0).values()) == 100_000
