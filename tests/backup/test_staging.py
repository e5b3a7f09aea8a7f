"""Staging of physical backups: private, and what a kill -9 leaves is removed by the next run, S3 repositories too."""

from __future__ import annotations

import json
import os
import signal
import socket
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


def test_a_logical_directory_dump_removes_what_a_killed_run_left(s3, s3_prefix, make_cluster, tmp_path):
    url, key = s3.repo_url(s3.primary_region, s3_prefix), tmp_path / "key"
    env = {**os.environ, **s3.env(), "TMPDIR": str(tmp_path)}  # its own temp dir: the staging root lives there
    key.write_text(generate_key_file_text())
    cluster = make_cluster("dumped")
    cluster.init()
    cluster.start()
    cluster.safe_sql(f"CREATE TABLE t AS SELECT g AS id, '{MARKER}' || g AS v FROM generate_series(1, 1000) g")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs: the owner of what a kill -9 left behind
    stale = tmp_path / f"pgdrill-staging-{os.getuid()}" / "20260101T000000Z-logical-dead-x1y2"
    (stale / "dump").mkdir(parents=True)
    (stale / ".owner.json").write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "since": 0}))
    (stale / "dump" / "3001.dat").write_text(f"1\t{MARKER}1\n")
    done = subprocess.run([sys.executable, "-m", "backup_tools", "backup", "--dsn", cluster.dsn, "--repo", url,
                           "--kind", "logical", "--format", "directory", "--compress", "none", "--key-file", str(key)],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not stale.exists() and holding(stale.parent, MARKER.encode()) == []
    assert stat.S_IMODE(stale.parent.stat().st_mode) == 0o700
