"""A hanging S3 endpoint ends every command within about a minute and never leaves a backup that lists as good."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from fixtures.faultproxy import FaultProxy, fault_proxy
from fixtures.s3 import S3Service

pytestmark = pytest.mark.integration

STUCK = 600.0  # seconds the proxy holds each request: longer than any command may take
WITHIN = 75.0  # "about a minute" (the requirement), not a measurement


@pytest.fixture
def proxy(s3: S3Service) -> Iterator[FaultProxy]:
    with fault_proxy(s3.endpoint) as p:
        yield p


def run(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "backup_tools", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})  # fmt: skip


def test_backup_into_an_endpoint_that_hangs_mid_upload_ends_within_a_minute(s3, s3_prefix, proxy, make_cluster):
    url, direct = s3.repo_url(s3.primary_region, s3_prefix), s3.env()
    cluster = make_cluster("hang")
    cluster.init()
    cluster.start()
    cluster.safe_sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
    proxy.hang(10_000, seconds=STUCK, path="base.tar")  # the endpoint stops answering once the upload begins
    began = time.monotonic()
    backup = run(
        "backup", "--dsn", cluster.dsn, "--repo", url, "--kind", "full", env=direct | {"AWS_ENDPOINT_URL": proxy.url}
    )
    while proxy.count(path="base.tar") == 0 and backup.poll() is None:
        time.sleep(0.05)
    proxy.hang(10_000, seconds=STUCK)  # ... and then to everything: the FAILED mark and the lock release too
    try:
        out, err = backup.communicate(timeout=STUCK)
    finally:
        backup.kill()
    elapsed = time.monotonic() - began
    print(f"backup against a hanging endpoint ended after {elapsed:.1f} s with exit {backup.returncode}")
    assert backup.returncode == 1, err
    assert elapsed < WITHIN, f"took {elapsed:.1f} s: {err}"
    assert "deadline" in err and "could not mark it FAILED" in err and "never lists as good" in err, err

    proxy.clear()
    listed = subprocess.run([sys.executable, "-m", "backup_tools", "list", "--repo", url, "--json"],
                            capture_output=True, text=True, env={**os.environ, **direct}, timeout=120)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert [b["status"] for b in json.loads(listed.stdout)] == ["STARTED"]  # nothing lists as good
    again = subprocess.run([sys.executable, "-m", "backup_tools", "backup", "--dsn", cluster.dsn, "--repo", url,
                            "--kind", "full"], capture_output=True, text=True, env={**os.environ, **direct},
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr  # the lock left behind is recognised as stale (its pid is gone)


def test_s3_timeout_is_configurable_and_checked(s3, s3_prefix, proxy):
    url, env = s3.repo_url(s3.primary_region, s3_prefix), s3.env() | {"AWS_ENDPOINT_URL": proxy.url}
    began = time.monotonic()  # what the same command costs on this machine now when the endpoint answers
    subprocess.run([sys.executable, "-m", "backup_tools", "list", "--repo", url],
                   capture_output=True, env={**os.environ, **s3.env()}, timeout=120)  # fmt: skip
    startup = time.monotonic() - began
    proxy.hang(10_000, seconds=STUCK)
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "backup_tools", "list", "--repo", url, "--s3-timeout", "3"],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=120)  # fmt: skip
    elapsed = time.monotonic() - began
    assert done.returncode == 1 and "deadline 3s" in done.stderr, done.stderr
    # the deadline, plus at most the retry back-off that started before it passed
    assert elapsed - startup < 2 * 3, f"a 3 s deadline took {elapsed:.1f} s (start-up {startup:.1f} s)"
    bad = subprocess.run([sys.executable, "-m", "backup_tools", "list", "--repo", url],
                         capture_output=True, text=True, env={**os.environ, **env, "PGDRILL_S3_TIMEOUT": "soon"},
                         timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "PGDRILL_S3_TIMEOUT" in bad.stderr, bad.stderr
