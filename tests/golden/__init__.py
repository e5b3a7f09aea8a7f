"""Frozen repositories made once with today's format; every build verifies and restores them (tests/test_golden.py)."""
