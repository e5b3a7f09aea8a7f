"""The repository's encryption policy: recorded at the first write, enforced on every write, changed only by rekey."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup_tools.repo.base import FileRepository
from backup_tools.repo.objects import store_object
from backup_tools.security.keys import generate_key_file_text

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run backup-tools as a separate process, as operators and archive_command do."""
    return subprocess.run([sys.executable, "-m", "backup_tools", *args], capture_output=True, text=True, timeout=300)


def keyfile(path: Path) -> Path:
    path.write_text(generate_key_file_text())
    path.chmod(0o600)
    return path


def segment_copies(cluster, dest: Path, count: int) -> list[Path]:
    """Copies of `count` real, finished WAL segments of the cluster (switched out of pg_wal's current one)."""
    dest.mkdir(exist_ok=True)
    out = []
    for _ in range(count):
        cluster.safe_sql("SELECT txid_current()")
        (name,) = cluster.safe_sql("SELECT pg_walfile_name(pg_switch_wal())")[0]
        out.append(Path(shutil.copy(cluster.data_dir / "pg_wal" / name, dest / name)))
    return out


def policy(repo: Path) -> str | None:
    return json.loads((repo / "identity.json").read_text()).get("encryption")


@pytest.fixture
def server(make_cluster):
    cluster = make_cluster("policy")
    cluster.init()
    cluster.start()
    cluster.safe_sql("CREATE TABLE t (id int PRIMARY KEY)")
    return cluster


def test_writes_that_break_the_encryption_policy_are_refused_until_rekey(server, tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    url, k1, k2 = f"file://{root}", keyfile(tmp_path / "k1"), keyfile(tmp_path / "k2")
    seg1, seg2, seg3, seg4 = segment_copies(server, tmp_path / "wal", 4)
    first = cli("backup", "--dsn", server.dsn, "--repo", url, "--kind", "full", "--key-file", str(k1))
    assert first.returncode == 0, first.stderr

    keyless = cli("backup", "--dsn", server.dsn, "--repo", url, "--kind", "full")
    assert keyless.returncode == 3 and "without a key" in keyless.stderr, keyless.stderr
    assert policy(root) and policy(root).startswith("kf-")  # recorded at the first write
    logical = cli("backup", "--dsn", server.dsn, "--repo", url, "--kind", "logical")
    assert logical.returncode == 3 and "without a key" in logical.stderr, logical.stderr
    listed = json.loads(cli("list", "--repo", url, "--json").stdout)
    assert [b["status"] for b in listed] == ["DONE"]  # nothing was started, nothing plaintext became "latest"

    push = cli("wal-push", str(seg1), "--repo", url)
    assert push.returncode == 3 and "without a key" in push.stderr, push.stderr
    other = cli("wal-push", str(seg1), "--repo", url, "--key-file", str(k2))
    assert other.returncode == 3 and "with key id" in other.stderr, other.stderr
    assert not (root / "wal" / seg1.name).exists()
    assert cli("wal-push", str(seg1), "--repo", url, "--key-file", str(k1)).returncode == 0

    rekeyed = cli("rekey", "--repo", url, "--key-file", str(k1), "--new-key-file", str(k2))
    assert rekeyed.returncode == 0, rekeyed.stderr
    old = cli("wal-push", str(seg2), "--repo", url, "--key-file", str(k1))
    assert old.returncode == 3, old.stderr
    assert cli("wal-push", str(seg2), "--repo", url, "--key-file", str(k2)).returncode == 0

    # An object written by an older backup-tools, which did not know the policy: `check` names it.
    envelope = {"name": seg3.name, "system_identifier": None, "pushed_at": datetime.now(UTC).isoformat()}
    store_object(FileRepository(root), f"wal/{seg3.name}", seg3, codec="none", scope="wal", envelope=envelope)
    checked = cli("check", "--repo", url, "--json", "--no-alerts")
    doc = json.loads(checked.stdout)
    (enc,) = [c for c in doc["checks"] if c["name"] == "encryption"]
    assert not enc["ok"] and enc["figures"]["breaches"] == [f"wal/{seg3.name} (plaintext)"], enc
    assert "k2" not in checked.stdout and k2.read_text().strip() not in checked.stdout
    assert cli("wal-push", str(seg4), "--repo", url, "--key-file", str(k2)).returncode == 0


def test_a_repository_without_a_recorded_policy_infers_it_from_its_objects(server, tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    url, k1 = f"file://{root}", keyfile(tmp_path / "k1")
    (seg,) = segment_copies(server, tmp_path / "wal", 1)
    assert cli("backup", "--dsn", server.dsn, "--repo", url, "--kind", "full", "--key-file", str(k1)).returncode == 0
    identity = json.loads((root / "identity.json").read_text())
    legacy = {k: v for k, v in identity.items() if not k.startswith("encryption")}  # as older versions wrote it
    (root / "identity.json").write_text(json.dumps(legacy))
    push = cli("wal-push", str(seg), "--repo", url)
    assert push.returncode == 3 and "without a key" in push.stderr, push.stderr
    after = json.loads((root / "identity.json").read_text())
    assert after["encryption"] == identity["encryption"] and after["encryption_source"].startswith("backup ")
    assert after["system_identifier"] == identity["system_identifier"]


def test_plaintext_policy_refuses_an_encrypted_write_and_a_first_wal_push_claims_it(server, tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    url, k1 = f"file://{root}", keyfile(tmp_path / "k1")
    (seg,) = segment_copies(server, tmp_path / "wal", 1)
    assert cli("wal-push", str(seg), "--repo", url).returncode == 0  # archiving starts before the first backup
    assert policy(root) == "plaintext"
    sealed = cli("backup", "--dsn", server.dsn, "--repo", url, "--kind", "full", "--key-file", str(k1))
    assert sealed.returncode == 3 and "plaintext" in sealed.stderr, sealed.stderr
    plain = cli("backup", "--dsn", server.dsn, "--repo", url, "--kind", "full")
    assert plain.returncode == 0, plain.stderr
    identity = json.loads((root / "identity.json").read_text())
    assert identity["encryption"] == "plaintext" and identity["system_identifier"]  # the backup claimed it too


def test_copy_into_a_repository_with_another_policy_is_refused(server, tmp_path):
    k1, k2 = keyfile(tmp_path / "k1"), keyfile(tmp_path / "k2")
    urls = []
    for name, key in (("a", k1), ("b", k2)):
        (tmp_path / name).mkdir()
        urls.append(f"file://{tmp_path / name}")
        done = cli("backup", "--dsn", server.dsn, "--repo", urls[-1], "--kind", "full", "--key-file", str(key))
        assert done.returncode == 0, done.stderr
    before = sorted(p.name for p in (tmp_path / "b" / "backups").iterdir())
    copied = cli("copy", "--repo", urls[0], "--to-repo", urls[1], "--backup", "latest")
    assert copied.returncode == 3 and "encryption policy" in copied.stderr, copied.stderr
    assert sorted(p.name for p in (tmp_path / "b" / "backups").iterdir()) == before
