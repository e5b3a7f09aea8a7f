"""Staging of physical backups: private, and what a kill -9 leaves is removed by the next run, S3 repositories too."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backup_tools.security.keys import generate_key_file_text

pytestmark = pytest.mark.integration

MARKER = "plaintext-marker-7f3c9e"  # row content that must never stay readable on local disk


def holding(root: Path, needle: bytes) -> list[Path]:
    """Files under root whose bytes contain needle."""
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


class Sampler:
    """Samples every file under some directories every few ms while a backup runs, noting any holding MARKER."""

    def __init__(self, *roots: Path):
        self.roots, self.samples, self.seen_dirs, self.plaintext = roots, 0, set(), set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for root in self.roots:
                for path in list(root.rglob("*")):
                    try:
                        if path.is_dir():
                            self.seen_dirs.add(path)
                        elif MARKER.encode() in path.read_bytes():
                            self.plaintext.add(path)
                    except OSError:
                        pass  # removed while we looked
            self.samples += 1
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def backup_argv(url: str, cluster, key: Path, staging: Path) -> list[str]:
    return [sys.executable, "-m", "backup_tools", "backup", "--dsn", cluster.dsn, "--repo", url, "--kind", "full",
            "--compress", "none", "--key-file", str(key), "--staging-dir", str(staging)]  # fmt: skip


def test_encrypted_backup_to_s3_never_stages_plaintext_even_when_killed(s3, s3_prefix, make_cluster, pg_bin, tmp_path):
    url, key, staging, tmp = (
        s3.repo_url(s3.primary_region, s3_prefix),
        tmp_path / "key",
        tmp_path / "st",
        tmp_path / "t",
    )
    env = {**os.environ, **s3.env(), "TMPDIR": str(tmp)}  # every temp file the backup makes lands where we look
    key.write_text(generate_key_file_text())
    staging.mkdir()
    tmp.mkdir()
    cluster = make_cluster("staged")
    cluster.init()
    cluster.start()
    cluster.safe_sql(f"CREATE TABLE t AS SELECT g AS id, '{MARKER}' || g AS v FROM generate_series(1, 300000) g")
    cluster.safe_sql("CHECKPOINT")

    # kill -9 of the backup and its pg_basebackup while the encrypted upload is under way
    log = tmp_path / "killed.log"
    sampler = Sampler(staging, tmp)
    with log.open("wb") as err:
        killed = subprocess.Popen(backup_argv(url, cluster, key, staging), env=env, stdout=subprocess.DEVNULL,
                                  stderr=err, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 120
        while b"pg_basebackup" not in log.read_bytes():
            assert killed.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        time.sleep(0.3)  # pg_basebackup is sending the table's rows now
        assert killed.poll() is None, log.read_text()
        os.killpg(killed.pid, signal.SIGKILL)  # as the OOM killer or a reboot would
        killed.wait()
    sampler.stop()
    assert sampler.samples > 10 and any(p.parent.name.startswith("pgdrill-staging-") for p in sampler.seen_dirs)
    assert sampler.plaintext == set()
    assert holding(staging, MARKER.encode()) == [] and holding(tmp, MARKER.encode()) == []

    # a whole run: still nothing plaintext staged, the next run cleared the killed one's directory, and the
    # backup does hold the marker rows (restored with the key)
    sampler = Sampler(staging, tmp)
    done = subprocess.run(backup_argv(url, cluster, key, staging), env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    sampler.stop()
    assert done.returncode == 0, done.stderr
    assert "left by a backup that was killed" in done.stderr
    assert sampler.plaintext == set() and sampler.samples > 3
    assert [p for p in staging.rglob("*") if p.is_file()] == []
    restored = tmp_path / "restored"
    back = subprocess.run([sys.executable, "-m", "backup_tools", "restore", "--repo", url, "--to", str(restored),
                           "--key-file", str(key), "--pg-bin", str(pg_bin.bindir)], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert back.returncode == 0, back.stderr
    assert holding(restored / "base", MARKER.encode())  # the rows were in the backup, only never on disk in clear


def test_staging_left_by_an_earlier_version_is_removed_when_ours_and_stale(s3, s3_prefix, make_cluster, tmp_path):
    url, key, staging = s3.repo_url(s3.primary_region, s3_prefix), tmp_path / "key", tmp_path / "st"
    tmp = tmp_path / "t"
    env = {**os.environ, **s3.env(), "TMPDIR": str(tmp)}
    key.write_text(generate_key_file_text())
    old = time.time() - 2 * 3600

    def left(parent: Path, name: str, *, mtime: float | None = old) -> Path:
        path = parent / name / "data"
        path.mkdir(parents=True)
        (path / "base.tar").write_text(f"{MARKER}1")
        for p in (path / "base.tar", path, path.parent):
            if mtime is not None:
                os.utime(p, (mtime, mtime))
        return path.parent

    stale = [left(staging, "pgdrill-20260101T000000Z-full-ab12-x1y2z3w4"), left(tmp, "pgdrill-dump-k9_2m3n4")]
    fresh = left(staging, "pgdrill-20260101T000000Z-incremental-cd34-a1b2c3d4", mtime=None)  # written just now
    busy = left(tmp, "pgdrill-dump-abcdefgh")
    other = left(staging, "pgdrill-not-ours-abcdefgh")  # not a name earlier versions made
    cluster = make_cluster("legacy")
    cluster.init()
    cluster.start()
    holder = subprocess.Popen(  # an earlier version's backup, still running, has a file open in its directory
        [sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'rb'); print(flush=True); time.sleep(300)",
         str(busy / "data" / "base.tar")], stdout=subprocess.PIPE)  # fmt: skip
    try:
        holder.stdout.readline()
        done = subprocess.run(backup_argv(url, cluster, key, staging), env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 0, done.stderr
    assert [p.exists() for p in stale] == [False, False], done.stderr
    assert fresh.exists() and busy.exists() and other.exists()
    assert done.stderr.count("earlier version") == 2


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


def test_a_backup_to_s3_stages_no_data_and_needs_no_local_disk_for_it(s3, s3_prefix, make_cluster, pg_bin, tmp_path):
    url, staging, tmp = s3.repo_url(s3.primary_region, s3_prefix), tmp_path / "st", tmp_path / "t"
    env = {**os.environ, **s3.env(), "TMPDIR": str(tmp)}
    staging.mkdir()
    tmp.mkdir()
    cluster = make_cluster("piped")
    cluster.init()
    cluster.start()
    cluster.safe_sql(f"CREATE TABLE t AS SELECT g AS id, '{MARKER}' || g AS v FROM generate_series(1, 300000) g")
    sampler = Sampler(staging, tmp)
    done = subprocess.run([sys.executable, "-m", "backup_tools", "backup", "--dsn", cluster.dsn, "--repo", url,
                           "--kind", "full", "--staging-dir", str(staging)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    sampler.stop()
    assert done.returncode == 0, done.stderr
    assert "to a remote repository: no data is staged" in done.stderr
    assert sampler.plaintext == set() and sampler.samples > 3
    listed = json.loads(subprocess.run([sys.executable, "-m", "backup_tools", "list", "--repo", url, "--json"], env=env,
                                       capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert sorted(f["name"] for f in listed[-1]["files"]) == ["backup_manifest", "base.tar.zst"]  # WAL inside
    restored = tmp_path / "restored"
    back = subprocess.run([sys.executable, "-m", "backup_tools", "restore", "--repo", url, "--to", str(restored),
                           "--target-immediate", "--pg-bin", str(pg_bin.bindir)], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert back.returncode == 0, back.stderr
    assert holding(restored / "base", MARKER.encode())
