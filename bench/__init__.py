"""Benchmarks: `python -m bench` runs every comparison (bench/__main__.py)."""
