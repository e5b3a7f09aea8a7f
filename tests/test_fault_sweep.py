"""Fault sweep (issue 9 item 7): fail the k-th S3 request of an operation (500, connection reset, hang) through
fixtures/faultproxy.py, for k over the requests the operation makes.

Each faulted run must exit 0 having done its job, or exit non-zero with one clear `backup-tools VERB: error:`
line; a clean re-run must then converge to the state an unfaulted run leaves (same good backups, WAL, bucket
backups and key ids; byte for byte where the inputs are the same), and nothing that lists as good may be
damaged. Operations of at most SMALL requests try every k with 500 and reset (a hang costs seconds: sampled
like the rest); larger ones try
PGDRILL_SWEEP_SAMPLE (default 1) random k per fault kind, seeded by PGDRILL_SWEEP_SEED (printed; set it to
replay a run; PGDRILL_SWEEP_SAMPLE=0 tries every k of every operation, which takes long).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import backup_tools
from backup_tools.pg.checks import fingerprint
from backup_tools.security.keys import generate_key_file_text
from fixtures.cluster import Cluster
from fixtures.faultproxy import FaultProxy, fault_proxy
from tests.support.repo_ops import cli_ok, restore_fingerprint, run_main
from tests.support.sweep_support import Tally, objects, repo_state

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("PGDRILL_SWEEP_SEED") or random.SystemRandom().randrange(1_000_000))
SAMPLE = int(os.environ.get("PGDRILL_SWEEP_SAMPLE", "1"))
SMALL = 5
S3_TIMEOUT = "3"  # PGDRILL_S3_TIMEOUT of faulted runs: a hanging request costs seconds, not minutes
ERROR_LINE = re.compile(r"^backup-tools [a-z -]+: error: \S")
# A hang is only a fault worth sweeping once requests have an overall deadline (issue 9 item 2).
HAS_DEADLINE = any("PGDRILL_S3_TIMEOUT" in p.read_text() for p in Path(backup_tools.__file__).parent.rglob("*.py"))
FAULTS: dict[str, Callable[[FaultProxy, int], None]] = {  # every attempt (3) of the k-th request fails
    "500": lambda proxy, k: proxy.fail(3, status=500, after=k - 1),
    "reset": lambda proxy, k: proxy.drop(3, after=k - 1),
    "hang": lambda proxy, k: proxy.hang(3, seconds=4, after=k - 1),
}
TALLY = Tally()


@dataclass
class World:
    """The module's cluster, keys, templates and the proxy in front of moto."""

    s3: object
    proxy: FaultProxy
    cluster: Cluster
    base: str
    key_a: Path
    key_b: Path
    segment: Path
    docs: Path
    prune_config: Path
    truth: object

    def url(self, name: str) -> str:
        return self.s3.repo_url(self.s3.primary_region, f"{self.base}/{name}")

    def direct(self, **extra: str) -> dict[str, str]:
        return self.s3.env() | extra

    def faulty(self) -> dict[str, str]:
        return self.s3.env() | {"AWS_ENDPOINT_URL": self.proxy.url, "PGDRILL_S3_TIMEOUT": S3_TIMEOUT}

    def clone(self, template: str, name: str) -> None:
        """Copy a template prefix to a new prefix inside the bucket (server side, not through the proxy)."""
        client, bucket = self.s3.client(), self.s3.primary_bucket
        for rel in objects(client, bucket, f"{self.base}/{template}"):
            client.copy_object(Bucket=bucket, Key=f"{self.base}/{name}/{rel}",
                               CopySource={"Bucket": bucket, "Key": f"{self.base}/{template}/{rel}"})  # fmt: skip

    def state(self, name: str, *, exact: bool) -> tuple[dict, list[str]]:
        return repo_state(self.s3.client(), self.s3.primary_bucket, f"{self.base}/{name}", exact=exact)


@pytest.fixture(scope="module")
def world(s3, pg_bin, tmp_path_factory) -> Iterator[World]:
    """A small archiving cluster; template T (two logical backups, then a full, + WAL) and E (key A: logical, WAL,
    bucket backup)."""
    tmp = tmp_path_factory.mktemp("sweep")
    base = f"sweep-{random.SystemRandom().randrange(16**8):08x}"
    url_t = s3.repo_url(s3.primary_region, f"{base}/T")
    cluster = Cluster("sweep", pg=pg_bin, base_dir=tmp, env=s3.env())
    key_a, key_b = tmp / "a.key", tmp / "b.key"
    for key in (key_a, key_b):
        key.write_text(generate_key_file_text())
        key.chmod(0o600)
    try:
        cluster.init(has_archiving=True, archive_url=url_t)
        cluster.start()
        cluster.safe_sql("CREATE TABLE ledger (id int PRIMARY KEY, note text)")
        cluster.safe_sql("INSERT INTO ledger SELECT g, 'row ' || g FROM generate_series(1, 200) g")
        with cluster.connect() as conn:
            truth = fingerprint(conn)
        for kind in ("logical", "logical", "full"):  # prune (daily = 1) deletes the two logical ones
            assert run_main("backup", "--dsn", cluster.dsn, "--repo", url_t, "--kind", kind, env=s3.env()).returncode == 0
        ((seg,),) = cluster.safe_sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        cluster.archive_current_wal()
        segment = tmp / seg
        segment.write_bytes((cluster.data_dir / "pg_wal" / seg).read_bytes())
        docs = tmp / "docs"
        for rel, size in (("a/contract.pdf", 3000), ("b/photo.jpg", 70_000), ("notes.txt", 12)):
            (docs / rel).parent.mkdir(parents=True, exist_ok=True)
            (docs / rel).write_bytes(hashlib.sha256(rel.encode()).digest() * (size // 32))
        prune_config = tmp / "retention.toml"
        prune_config.write_text("[retention]\ndaily = 1\nweekly = 0\nmonthly = 0\nyearly = 0\n")
        url_e, env_a = s3.repo_url(s3.primary_region, f"{base}/E"), s3.env() | {"PGDRILL_KEY_FILE": str(key_a)}
        for argv in (["backup", "--dsn", cluster.dsn, "--repo", url_e, "--kind", "logical"],
                     ["wal-push", str(segment), "--repo", url_e],
                     ["storage", "backup", "--source", str(docs), "--repo", url_e, "--name", "docs"]):  # fmt: skip
            done = run_main(*argv, env=env_a)
            assert done.returncode == 0, done.stderr
        with fault_proxy(s3.endpoint) as proxy:
            world = World(s3, proxy, cluster, base, key_a, key_b, segment, docs, prune_config, truth)
            world.clone("T", "C")  # copy's source: a frozen T (the cluster keeps archiving into T)
            print(f"fault sweep seed {SEED} (PGDRILL_SWEEP_SEED={SEED} replays it), sample {SAMPLE} k per fault kind")
            yield world
    finally:
        cluster.teardown()


@dataclass(frozen=True)
class Op:
    """One operation to sweep: its template (copied to each run's prefix), its arguments, how to compare."""

    name: str
    template: str | None
    argv: Callable[[World, str], list[str]]
    exact: bool


OPS = [
    Op("backup", None, lambda w, url: ["backup", "--dsn", w.cluster.dsn, "--repo", url, "--kind", "full"], False),
    Op("wal-push", None, lambda w, url: ["wal-push", str(w.segment), "--repo", url], True),
    Op("copy", None, lambda w, url: ["copy", "--repo", w.url("C"), "--to-repo", url, "--backup", "latest"], True),
    Op("prune", "T", lambda w, url: ["prune", "--repo", url, "--config", str(w.prune_config)], True),
    Op("rekey", "E", lambda w, url: ["rekey", "--repo", url, "--key-file", str(w.key_a), "--new-key-file",
                                     str(w.key_b)], False),  # fmt: skip
    Op("storage-backup", None, lambda w, url: ["storage", "backup", "--source", str(w.docs), "--repo", url,
                                               "--name", "docs"], False),  # fmt: skip
]


def _run(world: World, op: Op, name: str, *, faulty: bool) -> subprocess.CompletedProcess[str]:
    """Run the operation (main() in this process) on prefix `name`, through the proxy (faulty) or not."""
    return run_main(*op.argv(world, world.url(name)), env=world.faulty() if faulty else world.direct())


def _restores(world: World, op: Op, name: str, tmp_path: Path) -> None:
    """The good state an operation converged to restores to the cluster's fingerprint (or documents).

    copy and prune are compared byte for byte with an unfaulted run whose objects come from real backups; the
    backup sweep restores a physical backup, so they do not restore again here.
    """
    url = world.url(name)
    if op.name == "backup":
        newest = cli_ok("list", "--repo", url, env=world.direct()).splitlines()[-1].split()[0]
        got = restore_fingerprint(url, newest, tmp_path, pg=world.cluster.pg, env=world.direct())
        assert got.diff(world.truth) == []
    elif op.name in ("rekey", "storage-backup"):
        key = ["--key-file", str(world.key_b)] if op.name == "rekey" else []
        out = tmp_path / "docs"
        cli_ok("storage", "restore", "--repo", url, "--name", "docs", "--to", str(out), *key, env=world.direct())
        assert {p.relative_to(out) for p in out.rglob("*") if p.is_file()} == {
            p.relative_to(world.docs) for p in world.docs.rglob("*") if p.is_file()}  # fmt: skip
        for p in out.rglob("*"):
            assert not p.is_file() or p.read_bytes() == (world.docs / p.relative_to(out)).read_bytes()
    if op.name == "wal-push":
        cli_ok("wal-fetch", world.segment.name, str(tmp_path / "fetched"), "--repo", url, env=world.direct())
        assert (tmp_path / "fetched").read_bytes() == world.segment.read_bytes()


def _reference(world: World, op: Op, ref: str) -> tuple[dict, int]:
    """The state an unfaulted run leaves on a fresh prefix (or template copy), and how many requests it made."""
    if op.template:
        world.clone(op.template, ref)
    world.proxy.clear()
    done = _run(world, op, ref, faulty=True)
    assert done.returncode == 0, f"unfaulted {op.name} failed: {done.stderr}"
    ref_state, problems = world.state(ref, exact=op.exact)
    assert not problems and ref_state
    return ref_state, len(world.proxy.requests)


@pytest.mark.parametrize("op", OPS, ids=[o.name for o in OPS])
def test_fault_sweep(world, op, tmp_path):
    ref = f"{op.name}-ref"
    ref_state, requests = _reference(world, op, ref)
    rng = random.Random(f"{SEED}-{op.name}")
    kinds = [k for k in FAULTS if k != "hang" or HAS_DEADLINE]
    every = list(range(1, requests + 1))
    small = requests <= SMALL or SAMPLE == 0
    cases = [(kind, k) for kind in kinds
             for k in (every if small and kind != "hang" else sorted(rng.sample(every, SAMPLE or len(every))))]  # fmt: skip
    lost: list[str] = []
    last = ref
    for kind, k in cases:
        last = name = f"{op.name}-{kind}-{k}"
        if op.template:
            world.clone(op.template, name)
        world.proxy.clear()
        FAULTS[kind](world.proxy, k)
        faulted = _run(world, op, name, faulty=True)
        world.proxy.wait_idle()  # a hung request lands late, after its client gave up: let it, as it would
        world.proxy.clear()
        what = f"{op.name} with {kind} at request {k}/{requests}"
        err = faulted.stderr.strip().splitlines()
        if faulted.returncode != 0 and (not err or not ERROR_LINE.match(err[-1]) or "Traceback" in faulted.stderr):
            lost.append(f"{what}: exit {faulted.returncode} without one clear error line: {faulted.stderr[-400:]}")
            TALLY.add(op.name, "unclear")
            continue
        again = _run(world, op, name, faulty=False)
        state, problems = world.state(name, exact=op.exact)
        if again.returncode != 0 or problems or state != ref_state:
            diff = problems or [
                f"{key}: {state.get(key)!r} != {ref_state.get(key)!r}"[:300]
                for key in sorted(set(state) | set(ref_state)) if state.get(key) != ref_state.get(key)][:4]  # fmt: skip
            lost.append(f"{what}: the clean re-run (exit {again.returncode}) did not converge: {diff} "
                        f"{again.stderr.strip()[-300:]}")  # fmt: skip
            TALLY.add(op.name, "lost")
            continue
        TALLY.add(op.name, "succeeded" if faulted.returncode == 0 else "failed-cleanly")
    print(f"fault sweep {TALLY.line(op.name)}; {requests} requests, faults {cases}, seed {SEED}")
    assert not lost, "\n".join(lost)
    _restores(world, op, last, tmp_path)


KILLED = [o for o in OPS if o.name in ("backup", "copy", "prune", "rekey")]


@pytest.mark.parametrize("op", KILLED, ids=[o.name for o in KILLED])
def test_kill9_sweep(world, op):
    """kill -9 of the operation's process at seeded instants; a clean re-run converges to the unfaulted state."""
    ref_state, _ = _reference(world, op, f"{op.name}-kref")
    rng = random.Random(f"{SEED}-kill-{op.name}")
    instants = sorted(round(rng.uniform(0.3, 3.0), 2) for _ in range(max(SAMPLE, 1)))
    lost = []
    for i, delay in enumerate(instants):
        name = f"{op.name}-kill-{i}"
        if op.template:
            world.clone(op.template, name)
        proc = subprocess.Popen([sys.executable, "-m", "backup_tools", *op.argv(world, world.url(name))],
                                env={**os.environ, **world.direct()}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        again = _run(world, op, name, faulty=False)
        state, problems = world.state(name, exact=op.exact)
        if again.returncode != 0 or problems or state != ref_state:
            lost.append(f"kill -9 at {delay}s (exit {code}): re-run exit {again.returncode}, {problems or 'state differs'}"
                        f" {again.stderr.strip()[-300:]}")  # fmt: skip
            TALLY.add(f"kill-9 {op.name}", "lost")
        else:
            TALLY.add(f"kill-9 {op.name}", "succeeded" if code == 0 else "failed-cleanly")
    print(f"kill -9 sweep {TALLY.line(f'kill-9 {op.name}')}; instants {instants}, seed {SEED}")
    assert not lost, "\n".join(lost)
