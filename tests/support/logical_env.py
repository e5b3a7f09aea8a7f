"""Shared world for logical backup tests: one small seeded server per module, a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from backup_tools.pg.checks import Fingerprint, fingerprint
from backup_tools.repo.base import FileRepository
from fixtures.cluster import Cluster
from fixtures.seed import seed_database

__all__ = ["repo", "server", "source", "target"]  # the fixtures; test modules star-import them
TEMPLATE = "seed_template"
SCALE = 0.01  # users 10, clients 40, cases 100, documents 250, chat_messages 600
_counter = itertools.count(1)


@dataclass(frozen=True)
class Db:
    """One database on the module's server."""

    cluster: Cluster
    name: str

    @property
    def dsn(self) -> str:
        """A DSN over the unix socket; the superuser's password comes from the cluster's passfile, never the DSN."""
        return self.cluster.dsn_for(self.name)

    def connect(self) -> psycopg.Connection:
        """An autocommit connection."""
        return self.cluster.connect(dbname=self.name)

    def fingerprint(self, tables: list[str] | None = None) -> Fingerprint:
        """Fingerprints of the public tables now."""
        with self.connect() as conn:
            return fingerprint(conn, tables=tables)

    def tables(self) -> set[str]:
        """Names of the public tables."""
        rows = self.cluster.safe_sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", dbname=self.name)
        return {r[0] for r in rows}

    def execute(self, query: str) -> None:
        """Run one statement."""
        self.cluster.safe_sql(query, dbname=self.name)

    def scalar(self, query: str, params: object = None) -> object:
        """The first value of a query."""
        return self.cluster.safe_sql(query, params, dbname=self.name)[0][0]


@pytest.fixture(scope="module")
def server(pg_bin, tmp_path_factory) -> Iterator[Cluster]:
    """A started PG cluster (scram logins only, like the drills' world) holding a seeded template database."""
    cluster = Cluster("logical", pg=pg_bin, base_dir=tmp_path_factory.mktemp("logical"))
    try:
        cluster.init(password_auth=True)
        cluster.start()
        cluster.safe_sql(f"CREATE DATABASE {TEMPLATE}")
        with cluster.connect(dbname=TEMPLATE) as conn:
            seed_database(conn, scale=SCALE)
        yield cluster
    finally:
        cluster.teardown()


def new_db(cluster: Cluster, *, seeded: bool) -> Db:
    """A new database, a copy of the seeded template or empty."""
    name = f"db{next(_counter)}"
    template = TEMPLATE if seeded else "template0"
    cluster.safe_sql(f"CREATE DATABASE {name} TEMPLATE {template}")
    return Db(cluster, name)


@pytest.fixture
def source(server: Cluster) -> Db:
    """A seeded database to back up."""
    return new_db(server, seeded=True)


@pytest.fixture
def target(server: Cluster) -> Db:
    """An empty database to restore into."""
    return new_db(server, seeded=False)


@pytest.fixture
def repo(tmp_path: Path) -> FileRepository:
    """An empty file:// repository."""
    root = tmp_path / "repo"
    root.mkdir()
    return FileRepository(root)


def repo_snapshot(repo: FileRepository) -> dict[str, bytes]:
    """Every object in the repository (to prove an operation changed nothing)."""
    return {p.relative_to(repo.root).as_posix(): p.read_bytes() for p in repo.root.rglob("*") if p.is_file()}
