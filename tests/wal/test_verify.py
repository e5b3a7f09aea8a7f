"""WAL read back: wal-push refuses what is not a segment, `verify --wal` reads every object, `check` lists cheaply."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from backup_tools.repo.base import FileRepository
from backup_tools.wal.archive import wal_push
from tests.wal.test_wal import backup_tools, fake_segment

NAMES = [f"0000000100000000000000{n:02X}" for n in range(1, 7)]


@pytest.fixture
def repo(tmp_path: Path) -> FileRepository:
    root = tmp_path / "repo"
    root.mkdir()
    return FileRepository(root)


def test_wal_push_refuses_files_that_are_not_segments_of_their_name(repo, tmp_path):
    name = NAMES[0]
    small = fake_segment(tmp_path / name, size=1 << 20)  # a 1 MiB file carrying a segment name
    done = backup_tools("wal-push", str(small), "--repo", repo.url)
    assert done.returncode == 2 and "not the 16777216 of a whole segment" in done.stderr, done.stderr
    (tmp_path / "b").mkdir()
    misnamed = fake_segment(tmp_path / "b" / NAMES[1])
    shutil.move(misnamed, tmp_path / "b" / name)  # segment 2's content under segment 1's name
    done = backup_tools("wal-push", str(tmp_path / "b" / name), "--repo", repo.url)
    assert done.returncode == 2 and "is not the WAL file" in done.stderr, done.stderr
    junk = tmp_path / "c" / name
    junk.parent.mkdir()
    junk.write_bytes(b"\0" * (16 << 20))
    done = backup_tools("wal-push", str(junk), "--repo", repo.url)
    assert done.returncode == 2 and "does not start with a WAL page header" in done.stderr, done.stderr
    assert repo.list("wal/") == []
    (tmp_path / "d").mkdir()
    good = fake_segment(tmp_path / "d" / name)
    assert backup_tools("wal-push", str(good), "--repo", repo.url).returncode == 0


def test_verify_wal_reads_every_object_and_reports_damage_and_gaps(repo, tmp_path):
    for name in NAMES:
        wal_push(fake_segment(tmp_path / name), repo=repo)
    assert backup_tools("verify", "--wal", "--repo", repo.url).returncode == 0
    wal = repo.root / "wal"
    flipped = bytearray((wal / NAMES[1]).read_bytes())
    flipped[-5] ^= 0x10  # a bit flip inside the compressed payload
    (wal / NAMES[1]).write_bytes(bytes(flipped))
    (wal / NAMES[3]).unlink()  # a gap
    shutil.copy(wal / NAMES[5], wal / "000000010000000000000007")  # an object under the wrong name
    done = backup_tools("verify", "--wal", "--repo", repo.url, "--json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc["problems"]) == {f"wal/{NAMES[1]}", "wal/000000010000000000000007"}, doc["problems"]
    assert "misnamed" in doc["problems"]["wal/000000010000000000000007"]
    assert doc["gaps"] == [f"timeline 1: {NAMES[3]} .. {NAMES[3]} (1 segment(s) missing)"]
    assert doc["checked"] == 6


def test_verify_wal_finds_a_payload_whose_header_contradicts_its_name(repo, tmp_path):
    """An object written under the right envelope name but holding another segment's bytes (a copy mistake)."""
    from backup_tools.repo.objects import store_object

    other = fake_segment(tmp_path / NAMES[2])
    envelope = {"name": NAMES[0], "system_identifier": None, "pushed_at": "2026-11-30T00:00:00+00:00"}
    store_object(repo, f"wal/{NAMES[0]}", other, codec="zstd", scope="wal", envelope=envelope)
    done = backup_tools("verify", "--wal", "--repo", repo.url)
    assert done.returncode == 1 and "it holds segment 000000010000000000000003" in done.stdout, (
        done.stdout + done.stderr
    )


def test_check_lists_foreign_and_truncated_wal_objects_every_time(repo, tmp_path):
    for name in NAMES[:2]:
        wal_push(fake_segment(tmp_path / name), repo=repo)
    (repo.root / "wal" / "notes.txt").write_text("copied by hand")
    (repo.root / "wal" / NAMES[2]).write_bytes(b"")
    done = backup_tools("check", "--repo", repo.url, "--json", "--no-alerts")
    doc = json.loads(done.stdout)
    (objects,) = [c for c in doc["checks"] if c["name"] == "wal:objects"]
    assert not objects["ok"] and set(objects["figures"]["damaged"]) == {"wal/notes.txt", f"wal/{NAMES[2]}"}


def test_fake_segment_header_matches_its_name(tmp_path):
    seg = fake_segment(tmp_path / NAMES[4])
    _magic, _info, tli, addr, *_ = struct.unpack("<HHIQIIQII", seg.read_bytes()[:40])
    assert (tli, addr, seg.stat().st_size) == (1, 5 * (16 << 20), 16 << 20)
