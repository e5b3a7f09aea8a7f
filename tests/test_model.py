"""Model-based test (issue 9 item 10): a Hypothesis state machine over repository operations on a real cluster
and an encrypted file:// repository: full / incremental / logical backups, writes and WAL switches, prune with
the clock moving forward, copy to a second repository, rekey, and a backup killed with SIGKILL mid-way.

After every step: every backup listed good has all its objects with the recorded sha256 and a good parent;
prune kept the newest good backup, every parent of a kept backup and every WAL segment from the oldest kept
physical backup's start on; every stored data object is encrypted (nothing readable without the key). At the
end of each example the newest good physical backup restores, with all archived WAL, to the live fingerprint.

Each example starts with a full backup; CI runs 3 examples of up to 8 steps; PGDRILL_MODEL_EXAMPLES=N PGDRILL_MODEL_STEPS=M run more.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from backup_tools.lifecycle.prune import prune
from backup_tools.lifecycle.retention import RetentionPolicy
from backup_tools.pg.checks import fingerprint
from backup_tools.repo.base import FileRepository
from backup_tools.security.keys import generate_key_file_text
from backup_tools.wal.lsn import parse_lsn, segment_name
from fixtures.cluster import Cluster
from tests.support.repo_ops import restore_fingerprint, run_main

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("PGDRILL_MODEL_EXAMPLES", "3"))
STEPS = int(os.environ.get("PGDRILL_MODEL_STEPS", "8"))
POLICY = RetentionPolicy(daily=2, weekly=1, monthly=0, yearly=0)
OPS = ("write", "switch wal", "backup incremental", "backup logical", "prune", "copy", "rekey", "kill -9 backup",
       "backup full")  # fmt: skip
ENVELOPE, SEALED = b"PGDW1\n", b"PGDE"


def good_records(repo: FileRepository) -> list:
    """Catalog records that list as good, oldest first."""
    return [r for r in repo.list_backups() if r.is_good]


def check_repository(root: Path) -> list[str]:
    """Problems with what lists as good in a file repository, and any stored data that is not encrypted."""
    repo, problems = FileRepository(root), []
    good = {r.id: r for r in good_records(repo)}
    for r in good.values():
        for f in r.files:
            path = root / "backups" / r.id / f.name
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != f.sha256:
                problems.append(f"{r.id}/{f.name} lists as good but is missing or damaged")
            elif not path.read_bytes().startswith(SEALED):
                problems.append(f"{r.id}/{f.name} is stored without encryption")
        if r.parent and r.parent not in good:
            problems.append(f"{r.id} lists as good but its parent {r.parent} does not")
    for path in (root / "wal").glob("[!.]*") if (root / "wal").is_dir() else ():  # not an in-flight .tmp file
        head = path.read_bytes()[:4096]
        if not head.startswith(ENVELOPE) or not (json.loads(head[len(ENVELOPE):].split(b"\n", 1)[0]).get("encryption")):
            problems.append(f"wal/{path.name} is stored without encryption")
    return problems


class RepositoryModel(RuleBasedStateMachine):
    """Operations on one encrypted repository; the cluster and key path live for the module."""

    cluster: Cluster
    base: Path
    counter = 0
    steps: list[str] = []

    @initialize()
    def new_repository(self) -> None:
        type(self).counter += 1
        self.root = self.base / f"repo{self.counter}"
        self.root.mkdir()
        self.dst = self.base / f"dr{self.counter}"
        self.dst.mkdir()
        current = self.base / "current"  # the cluster's archive_command pushes here (a symlink)
        current.unlink(missing_ok=True)
        current.symlink_to(self.root)
        (self.base / "current.key").write_text(generate_key_file_text())
        self.cluster.archive_current_wal()
        self.clock = datetime.now(UTC)
        self.env = {"PGDRILL_KEY_FILE": str(self.base / "current.key")}
        self.write(50)
        self.backup("full")  # every example starts from a good backup

    def url(self, root: Path | None = None) -> str:
        return f"file://{root or self.base / 'current'}"

    @rule(op=st.sampled_from(OPS), n=st.integers(1, 200), days=st.integers(0, 40), delay=st.floats(0.05, 2.0))
    def step(self, op: str, n: int, days: int, delay: float) -> None:
        """One operation (Hypothesis' simplest choice, the first, is the cheapest: a write)."""
        {"write": lambda: self.write(n), "switch wal": self.switch_wal, "backup full": self.backup_full,
         "backup incremental": self.backup_incremental, "backup logical": self.backup_logical,
         "prune": lambda: self.prune_later(days), "copy": self.copy, "rekey": self.rekey,
         "kill -9 backup": lambda: self.kill_backup(delay)}[op]()  # fmt: skip

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        done = run_main(*argv, env=self.env)
        err = done.stderr.strip().splitlines()
        assert done.returncode == 0 or (err and err[-1].startswith("backup-tools ") and "error:" in err[-1]), done.stderr
        return done

    def write(self, n: int) -> None:
        type(self).steps.append(f"write {n}")
        self.cluster.safe_sql("INSERT INTO ledger (note) SELECT 'row ' || g FROM generate_series(1, %s::int) g", [n])

    def switch_wal(self) -> None:
        type(self).steps.append("switch wal")
        self.cluster.archive_current_wal()

    def backup_incremental(self) -> None:
        self.backup("incremental")

    def backup_logical(self) -> None:
        self.backup("logical")

    def backup_full(self) -> None:
        self.backup("full")

    def backup(self, kind: str) -> None:
        type(self).steps.append(f"backup {kind}")
        had_full = any(r.kind == "full" for r in good_records(FileRepository(self.root)))
        done = self.cli("backup", "--dsn", self.cluster.dsn, "--repo", self.url(), "--kind", kind)
        assert done.returncode == 0 or (kind == "incremental" and not had_full), done.stderr

    def prune_later(self, days: int) -> None:
        type(self).steps.append(f"prune +{days}d")
        self.clock += timedelta(days=days)
        repo = FileRepository(self.root)
        before = good_records(repo)
        wal_before = {p.name for p in (self.root / "wal").glob("*")}
        prune(repo, POLICY, now=self.clock, dry_run=False, log=lambda _: None)
        after = {r.id: r for r in good_records(repo)}
        if before:
            assert before[-1].id in after, f"prune removed the newest good backup {before[-1].id}"
        for r in after.values():
            assert not r.parent or r.parent in after, f"prune removed {r.parent}, parent of kept {r.id}"
        starts = [segment_name(r.timeline, parse_lsn(r.start_lsn)) for r in after.values() if r.kind != "logical"]
        if starts:
            needed = {n for n in wal_before if n[:24] >= min(starts)}
            missing = needed - {p.name for p in (self.root / "wal").glob("*")}
            assert not missing, f"prune removed WAL a kept backup needs: {sorted(missing)[:3]}"

    def copy(self) -> None:
        type(self).steps.append("copy")
        self.cli("copy", "--repo", self.url(), "--to-repo", self.url(self.dst), "--backup", "all")
        assert check_repository(self.dst) == []

    def rekey(self) -> None:
        type(self).steps.append("rekey")
        key, old = self.base / "current.key", self.base / f"old{self.counter}.key"
        new = self.base / f"new{self.counter}.key"
        old.write_text(key.read_text())
        new.write_text(generate_key_file_text())
        # rekey first: it switches the repository's encryption policy, which then refuses the old key
        done = self.cli("rekey", "--repo", self.url(), "--key-file", str(old), "--new-key-file", str(new))
        assert done.returncode == 0, done.stderr
        key.write_text(new.read_text())  # then archive_command (and every backup) switches to the new key
        self.cluster.archive_current_wal()

    def kill_backup(self, delay: float) -> None:
        type(self).steps.append(f"kill -9 after {delay:.2f}s")
        proc = subprocess.Popen([sys.executable, "-m", "backup_tools", "backup", "--dsn", self.cluster.dsn, "--repo",
                                 self.url(), "--kind", "full"], env={**os.environ, **self.env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    @invariant()
    def good_backups_are_whole_and_sealed(self) -> None:
        if hasattr(self, "root"):
            assert check_repository(self.root) == []

    def teardown(self) -> None:
        if not hasattr(self, "root"):
            return
        physical = [r for r in good_records(FileRepository(self.root)) if r.kind != "logical"]
        if not physical:
            return
        self.cluster.archive_current_wal()
        with self.cluster.connect() as conn:
            truth = fingerprint(conn)
        work = self.base / f"restore{self.counter}"
        got = restore_fingerprint(self.url(self.root), physical[-1].id, work, pg=self.cluster.pg, env=self.env,
                                  immediate=False)  # fmt: skip
        assert got.diff(truth) == [], f"{physical[-1].id} restored with all archived WAL differs: {got.diff(truth)}"


@pytest.fixture(scope="module")
def model_cluster(pg_bin, tmp_path_factory):
    """An archiving cluster whose archive_command pushes, encrypted, to whatever `current` points at."""
    base = tmp_path_factory.mktemp("model")
    cluster = Cluster("model", pg=pg_bin, base_dir=base, env={"PGDRILL_KEY_FILE": str(base / "current.key")})
    (base / "current.key").write_text(generate_key_file_text())
    (base / "boot").mkdir()
    (base / "current").symlink_to(base / "boot")
    try:
        cluster.init(has_archiving=True, archive_url=f"file://{base / 'current'}")
        cluster.start()
        cluster.safe_sql("CREATE TABLE ledger (id serial PRIMARY KEY, note text)")
        yield cluster, base
    finally:
        cluster.teardown()


def test_repository_model(model_cluster):
    RepositoryModel.cluster, RepositoryModel.base = model_cluster
    RepositoryModel.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=False,
        suppress_health_check=list(HealthCheck), database=None,
    )  # fmt: skip
    RepositoryModel.steps = []
    RepositoryModel.TestCase().runTest()
    runs = RepositoryModel.counter
    print(f"model: {runs} example(s), {len(RepositoryModel.steps)} step(s) with invariants checked after each: "
          f"{', '.join(RepositoryModel.steps)}")  # fmt: skip
