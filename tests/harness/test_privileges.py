"""The unprivileged user the suite drops to can write what the run writes."""

import os

import pytest


def test_the_pytest_cache_is_writable_after_dropping_root(pytestconfig):
    """Under tox, pytest's cache is $TOX_ENV_DIR/.pytest_cache, created by root: it must be handed over too."""
    assert os.geteuid() != 0, "fixtures.privileges should have dropped root before tests run"
    if getattr(pytestconfig, "cache", None) is None:
        pytest.skip("pytest's cacheprovider plugin is disabled (-p no:cacheprovider)")
    probe = pytestconfig.cache.mkdir("pgdrill-privileges-probe")
    (probe / "written").write_text("ok")
    assert (probe / "written").read_text() == "ok"
