"""Staging of physical backups: private, and what a kill -9 leaves is removed by the next run, S3 repositories too."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backup_tools.security.keys import generate_key_file_text

pytestmark = pytest.mark.integration

MARKER = "plaintext-marker-7f3c9e"  # row content that must never stay readable on local disk


def holding(root: Path, needle: bytes) -> list[Path]:
    """Files under root whose bytes contain needle."""
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_kill_9_mid_backup_to_s3_leaves_no_plaintext_after_the_next_run(s3, s3_prefix, make_cluster, tmp_path):
    url, env = s3.repo_url(s3.primary_region, s3_prefix), {**os.environ, **s3.env()}
    key, staging = tmp_path / "key", tmp_path / "staging"
    key.write_text(generate_key_file_text())
    staging.mkdir()
    cluster = make_cluster("staged")
    cluster.init()
    cluster.start()
    cluster.safe_sql(f"CREATE TABLE t AS SELECT g AS id, '{MARKER}' || g AS v FROM generate_series(1, 200000) g")
    cluster.safe_sql("CHECKPOINT")
    argv = [sys.executable, "-m", "backup_tools", "backup", "--dsn", cluster.dsn, "--repo", url, "--kind", "full",
            "--compress", "none", "--key-file", str(key), "--staging-dir", str(staging)]  # fmt: skip
    killed = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while not holding(staging, MARKER.encode()):  # plaintext rows are on disk: pg_basebackup is writing base.tar
        assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # the backup and its pg_basebackup, as the OOM killer or a reboot would
    killed.wait()
    time.sleep(0.5)
    assert holding(staging, MARKER.encode())  # the defect's starting point: a killed run's plaintext is there
    (root,) = [p for p in staging.iterdir() if p.is_dir()]
    assert stat.S_IMODE(root.stat().st_mode) == 0o700

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "left by a backup that was killed" in done.stderr
    assert holding(staging, MARKER.encode()) == []
    assert [p for p in staging.rglob("*") if p.is_file()] == []
