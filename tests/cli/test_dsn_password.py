"""A password inside --dsn: a warning naming password and service files, and the password never echoed."""

from __future__ import annotations

import subprocess
import sys

import pytest

SECRET = "Sekr3t-pw-4c1d"


@pytest.mark.parametrize(
    "dsn",
    [
        pytest.param(f"host=/nonexistent/sock dbname=app user=app password={SECRET}", id="key-value"),
        pytest.param(f"postgresql://app:{SECRET}@/app?host=/nonexistent/sock", id="uri"),
    ],
)
def test_password_in_dsn_warns_and_is_never_echoed(dsn, tmp_path):
    (tmp_path / "repo").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "backup_tools", "backup", "--dsn", dsn, "--repo", f"file://{tmp_path / 'repo'}",
         "--kind", "logical"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0  # nothing listens there
    warning = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warning and "PGPASSFILE" in warning[0] and "service" in warning[0], done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_no_warning_without_a_password(tmp_path):
    (tmp_path / "repo").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "backup_tools", "backup", "--dsn", "host=/nonexistent/sock dbname=app",
         "--repo", f"file://{tmp_path / 'repo'}", "--kind", "logical"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "warning" not in done.stderr, done.stderr
