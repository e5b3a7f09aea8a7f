"""Chaos soak (issue 9 item 11): `pytest -m soak --soak-minutes N --soak-seed S` (CI: 2 minutes, .ci/run).

An encrypted S3 repository behind the fault proxy, a primary archiving to it with a synchronous streaming
standby, a writer committing numbered rows all the time, backups on a schedule, and a seeded schedule of
faults: kill -9 of a backup, S3 500 and hang bursts, primary crash and restart, two backups at once, and one
standby promotion. The pass criterion is not "exit 0": afterwards every backup listed good verifies, the
oldest and the newest good physical backup restore with all archived WAL (across the promotion) to the live
fingerprint, the archived WAL has no gap per timeline from the oldest backup on, and no commit the writer
saw acknowledged is missing. The seed is printed first; the same seed replays the same schedule.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from backup_tools.pg.checks import fingerprint
from backup_tools.security.keys import generate_key_file_text
from backup_tools.wal.lsn import find_gaps, parse_lsn, segment_name
from fixtures.cluster import Cluster, backup_tools_command
from fixtures.faultproxy import fault_proxy
from tests.support.repo_ops import cli_ok, restore_fingerprint
from tests.support.secretscan import ProcWatcher, files_under, hits, needles_of

pytestmark = [pytest.mark.integration, pytest.mark.soak]
EVENTS = ("backup", "backup", "kill-backup", "s3-500-burst", "s3-hang-burst", "primary-crash", "two-backups")


class Writer(threading.Thread):
    """Commits numbered rows to whichever cluster is the primary; remembers what was acknowledged."""

    def __init__(self, primary: Cluster):
        super().__init__(daemon=True)
        self.primary, self.acked, self.errors, self.stop = primary, set(), 0, threading.Event()

    def run(self) -> None:
        seq, conn = 0, None
        while not self.stop.is_set():
            try:
                conn = conn or psycopg.connect(self.primary.dsn, autocommit=True, connect_timeout=3)
                seq += 1
                conn.execute("INSERT INTO ledger (seq) VALUES (%s)", [seq])
                self.acked.add(seq)
                time.sleep(0.02)
            except psycopg.Error:
                self.errors += 1
                conn = None
                time.sleep(0.2)


def _backup(env: dict[str, str], dsn: str, url: str, kind: str = "full") -> subprocess.Popen:
    """Start a backup-tools backup as its own process."""
    return subprocess.Popen([sys.executable, "-m", "backup_tools", "backup", "--dsn", dsn, "--repo", url, "--kind", kind],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _finish(proc: subprocess.Popen, outcomes: Counter, label: str) -> None:
    """Wait for a backup; it must succeed or fail with one clear error line."""
    out, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        outcomes[f"{label} ok"] += 1
        return
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert last.startswith("backup-tools backup: error:"), f"{label} exited {proc.returncode} unclearly: {err[-500:]}"
    outcomes[f"{label} failed cleanly"] += 1


def test_chaos_soak(request, s3, make_cluster, tmp_path):
    if "soak" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the chaos soak runs only when selected: pytest -m soak --soak-minutes N [--soak-seed S]")
    minutes = request.config.getoption("soak_minutes")
    seed = request.config.getoption("soak_seed")
    seed = random.SystemRandom().randrange(1_000_000) if seed is None else seed
    print(f"\nsoak seed {seed}: replay with pytest tests -m soak --soak-minutes {minutes:g} --soak-seed {seed}")
    rng = random.Random(seed)
    key = tmp_path / "soak.key"
    key.write_text(generate_key_file_text())
    key.chmod(0o600)
    url = s3.repo_url(s3.primary_region, f"soak-{seed}-{random.SystemRandom().randrange(16**6):06x}")
    direct = {**s3.env(), "PGDRILL_KEY_FILE": str(key)}
    watcher = ProcWatcher(interval=0.02, harvest_under=tmp_path)  # secret scan (issue 9 item 12): the soak's too
    watcher.start()
    with fault_proxy(s3.endpoint) as proxy:
        env = {**direct, "AWS_ENDPOINT_URL": proxy.url, "PGDRILL_S3_TIMEOUT": "5"}
        penv = {**os.environ, **env}
        # the standby archives what it receives too (always): what the primary had not pushed when it died is not lost
        archive = {"archive_mode": "always", "archive_command": backup_tools_command("wal-push", "%p", "--repo", url)}
        primary = make_cluster("primary", env=env)
        primary.init(has_archiving=True, archive_url=url, password_auth=True)  # scram only: the passfile's password
        primary.start()
        primary.safe_sql("CREATE TABLE ledger (seq bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        primary.backup("base")
        standby = make_cluster("standby", env=env)
        standby.init_from_backup(primary, "base", has_streaming=True)
        standby.append_conf(archive)
        standby.start()
        primary.append_conf({"synchronous_standby_names": "standby"})  # commits wait for the standby from here on
        primary.safe_sql("SELECT pg_reload_conf()")
        primary.poll_query_until("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'", "1")
        cli_ok("backup", "--dsn", primary.dsn, "--repo", url, "--kind", "full", env=direct)
        writer = Writer(primary)
        writer.start()
        outcomes: Counter = Counter()
        start, promoted = time.monotonic(), False
        deadline = start + minutes * 60
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(2, 6))
            if not promoted and time.monotonic() > start + 0.6 * minutes * 60:
                primary.kill9()  # the primary is lost: promote the synchronous standby, carry on there
                standby.promote()
                standby.wait_for_promotion()
                primary, writer.primary, promoted = standby, standby, True
                outcomes["promotion"] += 1
                continue
            event = rng.choice(EVENTS)
            outcomes[event] += 1
            if event == "backup":
                _finish(_backup(penv, primary.dsn, url, rng.choice(["full", "incremental"])), outcomes, "backup")
            elif event == "kill-backup":
                proc = _backup(penv, primary.dsn, url)
                time.sleep(rng.uniform(0.2, 2.5))
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
            elif event == "s3-500-burst":
                proxy.fail(rng.randint(3, 12))
            elif event == "s3-hang-burst":
                proxy.hang(rng.randint(1, 3), seconds=7)
            elif event == "primary-crash":
                primary.kill9()
                primary.start()
            elif event == "two-backups":
                procs = [_backup(penv, primary.dsn, url, k) for k in ("full", "incremental")]
                for proc in procs:
                    _finish(proc, outcomes, "concurrent backup")
        proxy.clear()
        writer.stop.set()
        writer.join(timeout=30)
        primary.archive_current_wal(timeout=120)
        with primary.connect() as conn:
            truth = fingerprint(conn)
            present = {r[0] for r in conn.execute("SELECT seq FROM ledger").fetchall()}

    # Then: nothing acknowledged is lost, good backups verify and restore across the promotion, WAL has no gap
    lost = sorted(writer.acked - present)
    assert not lost, f"{len(lost)} acknowledged commit(s) missing after the soak, first {lost[:5]} (seed {seed})"
    listed = json.loads(cli_ok("list", "--repo", url, "--json", env=direct))
    good = [b for b in listed if b["status"] == "DONE"]
    assert good, f"no backup listed good after the soak (seed {seed})"
    cli_ok("verify", "--repo", url, "--backup", "all", env=direct, timeout=600)
    wal = [k for k in s3.client().get_paginator("list_objects_v2").paginate(
        Bucket=s3.primary_bucket, Prefix=url.split("/", 3)[3] + "/wal/") for k in k.get("Contents", [])]  # fmt: skip
    oldest = min(segment_name(b["timeline"], parse_lsn(b["start_lsn"])) for b in good)
    names = [Path(o["Key"]).name for o in wal if Path(o["Key"]).name[:24] >= oldest[:24]]
    assert find_gaps(names) == {}, f"archived WAL has gaps (seed {seed})"
    restored = 0
    for b in {good[0]["id"]: good[0], good[-1]["id"]: good[-1]}.values():
        got = restore_fingerprint(url, b["id"], tmp_path, pg=primary.pg, env=direct, immediate=False,
                                  passfile=primary.passfile)  # fmt: skip
        assert got.diff(truth) == [], f"{b['id']} restored to the end of WAL differs: {got.diff(truth)} (seed {seed})"
        restored += 1
    watcher.stop.set()
    watcher.join()
    needles = needles_of(watcher.secret_files)
    assert len([w for w in needles.values() if w.startswith("a password")]) >= 1 and key.read_bytes().strip() in needles
    listed_objects = s3.client().get_paginator("list_objects_v2").paginate(
        Bucket=s3.primary_bucket, Prefix=url.split("/", 3)[3] + "/")
    catalogs = {o["Key"]: s3.client().get_object(Bucket=s3.primary_bucket, Key=o["Key"])["Body"].read()
                for page in listed_objects for o in page.get("Contents", []) if o["Key"].endswith(".json")}  # fmt: skip
    haystacks = files_under(tmp_path) | catalogs | {f"/proc sample {i}": b for i, b in enumerate(watcher.samples)}
    found = hits(haystacks, needles)
    assert found == [], f"secrets written by the soak: {found[:10]} (seed {seed})"
    print(f"soak seed {seed}: secret scan of {len(haystacks)} files, catalogs and /proc samples: 0 hits")
    print(f"soak seed {seed}: {minutes:g} min, events {dict(sorted(outcomes.items()))}, faults injected "
          f"{sum(outcomes[e] for e in ('kill-backup', 's3-500-burst', 's3-hang-burst', 'primary-crash', 'two-backups', 'promotion'))}, "
          f"{len(writer.acked)} commits acknowledged, 0 lost ({writer.errors} writer errors), {len(good)} backups good "
          f"and verified, {restored} restored to the live fingerprint, WAL without gaps")  # fmt: skip
