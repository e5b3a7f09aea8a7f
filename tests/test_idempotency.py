"""Idempotency sweep (issue 9 item 8): every maintenance command run twice in a row on a copy of a golden
repository; the second run succeeds and changes no stored byte (the whole tree hashed before and after).

Two deliberate exceptions, asserted exactly: verify stamps `verified_at` in each catalog it verified (check
reports how fresh verification is), and a second `storage backup` of an unchanged source stores no document
but a new manifest (a recovery point of its own: `storage check --at T` picks the newest finished by T).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from backup_tools.security.keys import generate_key_file_text
from tests.support.repo_ops import run_main, tree_digest
from tests.test_golden import DATA

pytestmark = pytest.mark.integration


def _without_verified_at(root: Path, digest: dict[str, str]) -> dict[str, object]:
    """The tree digest with catalogs compared minus verified_at (verify's own stamp, which check reports)."""
    out: dict[str, object] = dict(digest)
    for rel in digest:
        if rel.endswith("catalog.json"):
            doc = json.loads((root / rel).read_text())
            doc.pop("verified_at", None)
            out[rel] = doc
    return out


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    """A private copy of the golden repositories, a new key, a retention config, a documents directory."""
    root = tmp_path / "g"
    shutil.copytree(DATA, root)
    for key in (root / "golden.key", root / "new.key"):
        if key.name == "new.key":
            key.write_text(generate_key_file_text())
        key.chmod(0o600)
    (root / "retention.toml").write_text("[retention]\ndaily = 1\nweekly = 0\nmonthly = 0\nyearly = 0\n")
    ages = ("max_age", "wal_max_age", "verify_max_age", "restore_test_max_age", "bucket_max_age", "drill_max_age")
    (root / "monitor.toml").write_text("[monitor]\n" + "".join(f'{k} = "100000d"\n' for k in ages))  # golden data ages
    docs = root / "docs"
    (docs / "a").mkdir(parents=True)
    (docs / "a" / "lease.pdf").write_bytes(b"%PDF lease" * 300)
    (docs / "notes.txt").write_text("idempotent\n")
    (root / "dst").mkdir()
    return root


def url(root: Path, name: str) -> str:
    return f"file://{root / name}"


COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "verify": lambda r: ["verify", "--repo", url(r, "plain"), "--backup", "all"],
    "verify-encrypted": lambda r: ["verify", "--repo", url(r, "encrypted"), "--backup", "all", "--key-file",
                                   str(r / "golden.key")],  # fmt: skip
    "check": lambda r: ["check", "--repo", url(r, "plain"), "--config", str(r / "monitor.toml")],
    "prune": lambda r: ["prune", "--repo", url(r, "plain"), "--config", str(r / "retention.toml")],
    "copy": lambda r: ["copy", "--repo", url(r, "plain"), "--to-repo", url(r, "dst"), "--backup", "all"],
    "rekey": lambda r: ["rekey", "--repo", url(r, "encrypted"), "--key-file", str(r / "golden.key"),
                        "--new-key-file", str(r / "new.key")],  # fmt: skip
    "storage-backup": lambda r: ["storage", "backup", "--source", str(r / "docs"), "--repo", url(r, "plain"),
                                 "--name", "docs"],  # fmt: skip
}


@pytest.mark.parametrize("command", COMMANDS)
def test_second_run_succeeds_and_changes_no_stored_byte(repos, command):
    argv = COMMANDS[command](repos)
    first = run_main(*argv, env={})
    assert first.returncode == 0, first.stderr
    before = tree_digest(repos, skip=("docs/",))
    second = run_main(*argv, env={})
    assert second.returncode == 0, second.stderr
    after = tree_digest(repos, skip=("docs/",))
    if command.startswith("verify"):
        before, after = _without_verified_at(repos, before), _without_verified_at(repos, after)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    audit = [k for k in changed if "/audit/" in k]  # the audit trail: one new line per run in --repo, by design
    repo_dir = argv[argv.index("--repo") + 1].removeprefix(f"file://{repos}/")
    assert [k.split("/audit/")[0] for k in audit] == [repo_dir] and audit[0] not in before, audit
    changed = [k for k in changed if k not in audit]
    if command == "storage-backup":  # a new recovery point (storage check --at needs one per run), nothing more
        assert len(changed) == 1 and changed[0] not in before and changed[0].endswith("/manifest.json"), changed
        assert "2 unchanged" in second.stdout and "0 stored" in second.stdout, second.stdout
        return
    assert changed == [], f"the second {command} changed {changed}"
