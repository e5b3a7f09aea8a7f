"""Skips for features a PostgreSQL major lacks, each saying why."""

import pytest

from backup_tools.pg.bin import PgBin


def needs_incremental(pg_bin: PgBin) -> None:
    """Skip where pg_basebackup has no --incremental (PostgreSQL < 17)."""
    if pg_bin.major < 17:
        pytest.skip(f"incremental backups need PostgreSQL 17+; binaries are {pg_bin.version}")
