"""--shard I/N: run one deterministic share of the selected drills, so N CI runners split a suite (merge: reports/merge.py)."""

from __future__ import annotations

import re

import pytest

shard_key = pytest.StashKey[tuple[int, int]]()


def parse_shard(value: str) -> tuple[int, int]:
    """'2/3' -> (2, 3); anything else is a usage error naming the expected form."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value or "")
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise pytest.UsageError(f"--shard {value!r}: expected I/N with 1 <= I <= N, e.g. --shard 1/3")
    return int(match[1]), int(match[2])


def shard_of(nodeids: list[str], index: int, count: int) -> list[str]:
    """The nodeids of shard index (1-based) of count: every count-th test in sorted order, starting at index-1."""
    return sorted(nodeids)[index - 1 :: count]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add --shard."""
    parser.getgroup("pgdrill").addoption(
        "--shard", default=None, help="run shard I of N of the selected tests (I/N, e.g. 1/3), one per CI runner"
    )


def pytest_configure(config: pytest.Config) -> None:
    """Check --shard early, so a bad value stops the run before any server starts."""
    if config.getoption("shard", None):
        config.stash[shard_key] = parse_shard(config.getoption("shard"))
        from reports.plugin import run_key

        run = config.stash.get(run_key, None)
        if run is not None:  # drill-results.json says which share this run was, so a merge can tell one is missing
            run.environment["Shard"] = "{}/{}".format(*config.stash[shard_key])


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep this shard's tests (after -k/-m and the slow filter), deselect the rest; the same on every xdist worker."""
    if shard_key not in config.stash:
        return
    keep = set(shard_of([item.nodeid for item in items], *config.stash[shard_key]))
    others = [item for item in items if item.nodeid not in keep]
    if others:
        config.hook.pytest_deselected(items=others)
        items[:] = [item for item in items if item.nodeid in keep]
