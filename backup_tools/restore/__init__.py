"""Restoring: point-in-time targets, physical and logical restores, one table, starting the restored server."""
