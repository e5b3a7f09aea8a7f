"""Backup, WAL archiving, restore and verification operations for PostgreSQL."""

__version__ = "0.1.0"
