"""Schema digests and multi-schema fingerprints on a production-like server: a lost RLS policy or function is named."""

from __future__ import annotations

import pytest

from backup_tools.pg.checks import fingerprint_schemas
from backup_tools.pg.schemadigest import digest_diff, schema_digest
from fixtures.origin import APP_DB

pytestmark = pytest.mark.integration


def test_digest_names_what_a_restore_lost(make_origin):
    origin = make_origin("origin")
    with origin.connect(dbname=APP_DB) as conn:
        before = schema_digest(conn)
        tables = fingerprint_schemas(conn)
        assert "auth.users" in tables.tables and "messages" in tables.tables
        assert "auth.users.tenant_isolation" in before["policies"]
        assert "auth.user_count()" in before["functions"]
        assert "auth.users.users_touch" in before["triggers"]
        assert {"app_owner", "app_user"} <= set(before["roles"])
        assert not any(name.startswith("public.digest") for name in before["functions"]), "pgcrypto's own functions"
        assert digest_diff(schema_digest(conn), before) == []

        conn.execute("DROP POLICY tenant_isolation ON auth.users")
        conn.execute("DROP FUNCTION auth.user_count()")
        conn.execute("ALTER TABLE auth.users ALTER COLUMN display_name DROP NOT NULL")
        conn.execute("SELECT setval('auth.users_id_seq', 1)")
        lost = digest_diff(schema_digest(conn), before)
    assert "RLS policy auth.users.tenant_isolation missing" in lost
    assert "function auth.user_count() missing" in lost
    assert "column auth.users.display_name differs from its recorded definition" in lost
    assert "sequence auth.users_id_seq at 1, behind its recorded value 200" in lost
