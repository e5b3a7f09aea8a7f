"""Roles a dump references, and a pg_dumpall roles script applied to a target whose superuser differs."""

from __future__ import annotations

from backup_tools.pg.roles import roles_in_script

SCRIPT = """
CREATE TABLE auth.users (id bigint);
ALTER TABLE auth.users OWNER TO app_owner;
ALTER SCHEMA auth OWNER TO "Mixed ""Case"" Owner";
CREATE POLICY tenant_isolation ON auth.users TO app_user, reporting USING ((tenant = current_setting('app.tenant')));
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES TO app_reader;
REVOKE ALL ON FUNCTION auth.user_count() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.user_count() TO app_user;
GRANT SELECT ON TABLE auth.users TO analyst WITH GRANT OPTION;
"""


def test_roles_in_script_finds_owners_grantees_and_policy_roles():
    assert roles_in_script(SCRIPT) == ['Mixed "Case" Owner', "analyst", "app_owner", "app_reader", "app_user", "reporting"]
