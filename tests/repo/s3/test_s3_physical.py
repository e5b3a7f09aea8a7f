"""Physical backups and WAL in an s3:// repository (moto server): full + incremental, archive_command, PITR."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import urllib3
from botocore.exceptions import ConnectionClosedError

from backup_tools.errors import RepositoryError
from backup_tools.pg.checks import fingerprint
from backup_tools.pg.ports import free_port
from backup_tools.wal.archive import wal_fetch, wal_push
from tests.wal.test_wal import SEG, fake_segment

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run backup-tools as its own process with the S3 endpoint and credentials in its environment."""
    done = subprocess.run([sys.executable, "-m", "backup_tools", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})  # fmt: skip
    assert done.returncode == 0, f"backup-tools {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done


def write_rows(cluster, first: int, last: int) -> None:
    """Commit rows first..last, one transaction each."""
    with cluster.connect() as conn:
        for i in range(first, last + 1):
            conn.execute("INSERT INTO ledger (id, note) VALUES (%s, %s)", [i, f"row {i}"])


def test_full_incremental_and_wal_in_s3_restore_to_a_time_from_s3_alone(s3, s3_prefix, make_cluster, tmp_path):
    url, env = s3.repo_url(s3.primary_region, s3_prefix), s3.env()
    primary = make_cluster("primary", env=env)  # archive_command (wal-push to S3) needs the endpoint too
    primary.init(has_archiving=True, archive_url=url)
    primary.start()
    primary.safe_sql("CREATE TABLE ledger (id int PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp())")
    write_rows(primary, 1, 20)
    full = cli("backup", "--dsn", primary.dsn, "--repo", url, "--kind", "full", env=env).stdout.strip()
    write_rows(primary, 21, 40)
    primary.safe_sql("DELETE FROM ledger WHERE id % 7 = 0")
    incremental = cli("backup", "--dsn", primary.dsn, "--repo", url, "--kind", "incremental", env=env).stdout.strip()
    for first in range(41, 61, 2):  # ten archived segments: more than a restore prefetches before the start
        write_rows(primary, first, first + 1)
        primary.archive_current_wal()
    time.sleep(0.3)
    (target_time,) = primary.safe_sql("SELECT clock_timestamp()")[0]
    with primary.connect() as conn:
        truth = fingerprint(conn)
    time.sleep(0.3)
    write_rows(primary, 61, 80)  # after the target: must not come back
    primary.archive_current_wal()
    primary.stop("immediate")
    shutil.rmtree(primary.data_dir)  # from here on only the bucket holds the data

    keys = [o["Key"] for page in s3.client().get_paginator("list_objects_v2").paginate(
        Bucket=s3.primary_bucket, Prefix=s3_prefix + "/") for o in page.get("Contents", [])]  # fmt: skip
    names = {k[len(s3_prefix) + 1 :] for k in keys}
    assert {f"backups/{full}/base.tar.zst", f"backups/{incremental}/base.tar.zst", "identity.json"} <= names
    assert sum(1 for n in names if n.startswith("wal/")) >= 3
    listed = json.loads(cli("list", "--repo", url, "--json", env=env).stdout)
    assert [(b["kind"], b["status"], b["parent"]) for b in listed] == [("full", "DONE", None),
                                                                        ("incremental", "DONE", full)]  # fmt: skip

    data, sock, port = tmp_path / "restored", tmp_path / "sock", free_port()
    sock.mkdir()
    done = cli("restore", "--repo", url, "--to", str(data), "--target-time", target_time.isoformat(), "--start",
               "--port", str(port), "--socket-dir", str(sock), env=env)  # fmt: skip
    assert done.stdout.strip() == incremental and "promoted" in done.stderr
    assert re.search(r"### Fetched [1-9]\d* WAL file\(s\) ahead of recovery while it ran\n", done.stderr), done.stderr
    try:
        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            got = fingerprint(conn)
            newest = conn.execute("SELECT max(at) FROM ledger").fetchone()[0]
    finally:
        subprocess.run([str(primary.pg.tool("pg_ctl")), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, check=True)  # fmt: skip
    assert got.diff(truth) == []
    assert got.tables["ledger"].rows == 60 - 5 and newest <= target_time
    assert not (data / "pg_wal" / "pgdrill-prefetch").exists()


def _lose_first_answer(calls: list[str]):
    """A before-send hook: really send the first WAL PUT, then act as if its answer never arrived (botocore retries)."""

    def hook(request, **_kwargs):
        if calls or "/wal/" not in request.url:  # identity.json (the encryption policy's first write) goes through
            return None
        calls.append(request.url)
        body = request.body.read() if hasattr(request.body, "read") else request.body
        if hasattr(request.body, "seek"):
            request.body.seek(0)
        sent = urllib3.PoolManager().request(request.method, request.url, body=body, headers=dict(request.headers))
        assert sent.status == 200, sent.data
        raise ConnectionClosedError(endpoint_url=request.url)

    return hook


def test_wal_push_whose_first_answer_was_lost_succeeds_when_the_stored_copy_matches(s3, s3_prefix, tmp_path):
    # fixtures/faultproxy.py drops connections before forwarding; a lost *answer* needs the request to land first
    repo = s3.repository(s3.primary_region, s3_prefix)
    seg = fake_segment(tmp_path / SEG)
    calls: list[str] = []
    repo._c_new.meta.events.register("before-send.s3.PutObject", _lose_first_answer(calls))
    result = wal_push(seg, repo=repo)  # the retry's conditional put answers 412: the object is already there
    assert calls and result.already_archived and result.name == SEG
    assert wal_fetch(SEG, tmp_path / "back", repo=repo) == seg.stat().st_size
    assert (tmp_path / "back").read_bytes() == seg.read_bytes()


def test_wal_push_conditional_put_conflict_with_different_content_is_refused(s3, s3_prefix, tmp_path, monkeypatch):
    import backup_tools.wal.archive as wal_module

    repo = s3.repository(s3.primary_region, s3_prefix)
    first = fake_segment(tmp_path / SEG)
    wal_push(first, repo=repo)
    (tmp_path / "other").mkdir()
    second = fake_segment(tmp_path / "other" / SEG, fill=b"z")
    raced: list[str] = []
    real_exists = repo.exists

    def racing_exists(key: str) -> bool:  # the pre-check misses it: another pusher wins between check and put
        if key.startswith("wal/") and not raced:
            raced.append(key)
            return False
        return real_exists(key)

    monkeypatch.setattr(repo, "exists", racing_exists)
    with pytest.raises(RepositoryError, match="DIFFERENT content"):
        wal_module.wal_push(second, repo=repo)
    assert raced == [f"wal/{SEG}"]
    assert wal_fetch(SEG, tmp_path / "back", repo=repo) == first.stat().st_size
    assert Path(tmp_path / "back").read_bytes() == first.read_bytes()


def test_cli_wal_push_whose_answer_the_proxy_lost_succeeds(s3, s3_prefix, tmp_path):
    from fixtures.faultproxy import fault_proxy

    url, seg = s3.repo_url(s3.primary_region, s3_prefix), fake_segment(tmp_path / SEG)
    with fault_proxy(s3.endpoint) as proxy:
        env = s3.env() | {"AWS_ENDPOINT_URL": proxy.url}
        proxy.lose_answer(1, method="PUT", path=f"/wal/{SEG}")  # stored upstream, the reply never arrives
        cli("wal-push", str(seg), "--repo", url, env=env)  # the retry's conditional PUT finds the same sha256
        assert proxy.count("PUT", f"/wal/{SEG}") == 2
        (tmp_path / "other").mkdir()
        different = fake_segment(tmp_path / "other" / SEG, fill=b"z")
        refused = subprocess.run([sys.executable, "-m", "backup_tools", "wal-push", str(different), "--repo", url],
                                 capture_output=True, text=True, timeout=120, env={**os.environ, **env})  # fmt: skip
        assert refused.returncode == 1 and "DIFFERENT content" in refused.stderr
    cli("wal-fetch", SEG, str(tmp_path / "back"), "--repo", url, env=s3.env())
    assert (tmp_path / "back").read_bytes() == seg.read_bytes()
