"""A stand-in "production" server, started by the tests outside the drill fixtures: password logins, `app` owned by
an application role, an `auth` schema with row-level security, citext, fresh timestamps; and its pg_dump files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard
from psycopg import sql

from backup_tools.pg.bin import PgBin
from backup_tools.pg.run import run
from fixtures.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "prod-superuser-not-on-argv"
USERS = 1200
SCHEMA = """
CREATE ROLE app_owner NOLOGIN;
CREATE ROLE app_user LOGIN PASSWORD 'app-user-secret';
CREATE DATABASE app OWNER app_owner;
"""
APP = """
CREATE EXTENSION IF NOT EXISTS citext;
SET ROLE app_owner;
CREATE SCHEMA auth;
CREATE TABLE auth.users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email citext NOT NULL UNIQUE,
                         secret bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_row ON auth.users TO app_user USING (email = current_user);
CREATE TABLE public.messages (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES auth.users,
                              body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
GRANT USAGE ON SCHEMA auth TO app_user;
GRANT SELECT, INSERT ON auth.users, public.messages TO app_user;
INSERT INTO auth.users (email, secret, created_at)
    SELECT 'user' || g || '@example.org', sha256(g::text::bytea), now() - g * interval '1 hour'
    FROM generate_series(1, {users}) g;
INSERT INTO public.messages (user_id, body, created_at)
    SELECT 1 + g % {users}, 'message ' || g, now() - g * interval '1 minute' FROM generate_series(0, 2999) g;
RESET ROLE;
"""
FORMATS = {"custom": ".dump", "directory": ".dir", "tar": ".tar", "plain": ".sql", "gzip": ".sql.gz", "zstd": ".sql.zst"}


@dataclass
class Production:
    """The running stand-in and a passfile holding its superuser's password (0600, never on argv)."""

    cluster: Cluster
    passfile: Path

    @property
    def env(self) -> dict[str, str]:
        """Environment for libpq tools: the passfile, no other secret."""
        return {"PGPASSFILE": str(self.passfile)}

    @property
    def dsn(self) -> str:
        """TCP, password-authenticated, to the app database."""
        return f"host=127.0.0.1 port={self.cluster.port} dbname=app user=postgres"

    def dump(self, folder: Path, fmt: str, *, stamp: str = "2026-11-30T020000") -> Path:
        """pg_dump the app database as a team's backup job would, in one format; return the artifact."""
        pg: PgBin = self.cluster.pg
        out = folder / f"app-{stamp}{FORMATS[fmt]}"
        if fmt in ("custom", "directory", "tar"):
            run([pg.tool("pg_dump"), "-F", fmt[0], "-f", out, "-d", self.dsn], env=self.env)
            return out
        text = run([pg.tool("pg_dump"), "-d", self.dsn], env=self.env).stdout.encode()
        compress = {"plain": bytes, "gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress}[fmt]
        out.write_bytes(compress(text))
        return out

    def dump_globals(self, path: Path) -> Path:
        """pg_dumpall --globals-only into path."""
        run([self.cluster.pg.tool("pg_dumpall"), "--globals-only", "-f", path, "-d", self.dsn.replace("dbname=app", "dbname=postgres")],
            env=self.env)  # fmt: skip
        return path


def start_production(pg: PgBin, base: Path, *, configure: Callable[[Cluster], dict[str, str]] | None = None) -> Production:
    """Start the stand-in with trust only while it is set up, then scram-sha-256 for every connection.

    configure(cluster) may return more server settings (e.g. an archive_command naming the cluster's paths).
    """
    cluster = Cluster("production", pg=pg, base_dir=base)
    extra = configure(cluster) if configure else {}
    cluster.init(allows_streaming=bool(extra), settings={"password_encryption": "scram-sha-256"} | extra)
    cluster.start()
    for statement in SCHEMA.strip().split(";\n"):
        cluster.safe_sql(statement)
    with cluster.connect(dbname="app") as conn:
        conn.execute(APP.format(users=USERS))
        conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(PASSWORD)))
    (cluster.data_dir / "pg_hba.conf").write_text("local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
    cluster.safe_sql("SELECT pg_reload_conf()")
    passfile = base / "pgpass"
    passfile.write_text(f"*:*:*:postgres:{PASSWORD}\n")
    passfile.chmod(0o600)
    return Production(cluster, passfile)


def run_drill(tmp_path: Path, *args: str, env: dict[str, str] | None = None, select: str = "restore_the_teams_dumps and not test_containers",
              ) -> tuple[subprocess.CompletedProcess, dict]:  # fmt: skip
    """`pytest drills -k SELECT ARGS` in a fresh process, as README says to run it; its output and the drill's record."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}"
    argv = [sys.executable, "-m", "pytest", "drills", "-k", select, "-p", "no:cacheprovider",
            "--report-dir", str(report), "--history-file", str(tmp_path / "history.jsonl"), *args]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, env=os.environ | (env or {}), capture_output=True, text=True, timeout=600)
    results = report / "drill-results.json"
    drills = json.loads(results.read_text())["drills"] if results.exists() else []
    return done, (drills[0] if drills else {})


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Names, sizes and modification times of every file under folder."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}
