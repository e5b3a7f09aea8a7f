"""The streaming backup_manifest check (backup/manifest.py) on real pg_basebackup tars of PostgreSQL 15 and 18."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from backup_tools.backup import tailread
from backup_tools.backup.basebackup import MANIFEST, verify_dir
from backup_tools.backup.manifest import TarScan, check_tars, check_wal_tar, scan_file
from backup_tools.backup.physical import physical_backup
from backup_tools.errors import IntegrityCheckFailed
from backup_tools.pg.bin import PgBin, find_pg_bin
from backup_tools.repo.base import FileRepository

pytestmark = pytest.mark.integration
PG15 = Path("/usr/lib/postgresql/15/bin")
SEG = 16 * 1024 * 1024


def quiet(_: str) -> None:
    """Swallow progress lines."""


@pytest.fixture(params=["default", "15"])
def pg(request, pg_bin) -> PgBin:
    """The suite's PostgreSQL, and Debian's 15 (whose pg_verifybackup cannot read tar files)."""
    if request.param == "default":
        return pg_bin
    if not (PG15 / "postgres").exists():
        pytest.skip(f"PostgreSQL 15 binaries not installed at {PG15} (Debian package postgresql-15)")
    return find_pg_bin(PG15)


@pytest.fixture
def staged(make_cluster, pg, tmp_path) -> Path:
    """A real `pg_basebackup -Ft -X stream` of a small cluster (the form backup-tools stages)."""
    cluster = make_cluster("src", pg=pg)
    cluster.init(allows_streaming=True)
    cluster.start()
    cluster.safe_sql("CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g")
    out = tmp_path / "staged"
    subprocess.run([str(pg.tool("pg_basebackup")), "-h", str(cluster.socket_dir), "-p", str(cluster.port), "-U",
                    "postgres", "-D", str(out), "-Ft", "-X", "stream", "-c", "fast", "--no-sync"],
                   check=True, capture_output=True)  # fmt: skip
    return out


def scans_of(path: Path, piece: int = 1 << 20) -> dict[str, TarScan]:
    """Feed base.tar to a TarScan in pieces of `piece` bytes, as the object pipeline does."""
    scan = TarScan("CRC32C")
    data = (path / "base.tar").read_bytes()
    for i in range(0, len(data), piece):
        scan.feed(data[i : i + piece])
    return {"base.tar": scan}


def damaged_copy(staged: Path, tmp_path: Path, damage) -> Path:
    """A copy of the staged backup whose base.tar went through damage(bytearray) -> bytes."""
    copy = tmp_path / "damaged"
    shutil.copytree(staged, copy)
    tar = copy / "base.tar"
    tar.write_bytes(damage(bytearray(tar.read_bytes())))
    return copy


def member_offset(tar_path: Path, name: str) -> int:
    """Where a member's content starts in a tar file."""
    with tarfile.open(tar_path) as tar:
        return tar.getmember(name).offset_data


def test_a_good_backup_matches_its_manifest_in_any_piece_size(staged, pg):
    count = check_tars(staged / MANIFEST, scans_of(staged))
    assert count > 900  # every file of a fresh cluster: catalogs, the table, pg_control
    for piece in (1, 511, 513, 7777):
        if piece == 1:  # byte by byte only over the first blocks: the split handling, not the speed
            scan = TarScan("CRC32C")
            scan.feed((staged / "base.tar").read_bytes()[:4096])
            continue
        assert scans_of(staged, piece)["base.tar"].members == scans_of(staged)["base.tar"].members
    assert check_wal_tar(staged / "pg_wal.tar", staged / MANIFEST, segment_size=SEG) >= 1
    verify_dir(staged, pg=pg, fmt="tar", segment_size=SEG)  # reads the tars itself (and pg_verifybackup on 18)


def test_a_flipped_byte_in_a_file_is_named(staged, tmp_path):
    at = member_offset(staged / "base.tar", "global/pg_control") + 100
    bad = damaged_copy(staged, tmp_path, lambda b: bytes(b[:at]) + bytes([b[at] ^ 1]) + bytes(b[at + 1 :]))
    with pytest.raises(IntegrityCheckFailed, match=r'"global/pg_control": checksum mismatch \(CRC32C'):
        check_tars(bad / MANIFEST, scans_of(bad))


def test_a_truncated_tar_fails(staged, tmp_path):
    bad = damaged_copy(staged, tmp_path, lambda b: bytes(b[: len(b) // 2]))
    with pytest.raises(IntegrityCheckFailed, match=r"base\.tar ends in the middle \(truncated\).*not in the backup"):
        check_tars(bad / MANIFEST, scans_of(bad))


def test_a_damaged_manifest_or_a_missing_wal_segment_fails(staged, tmp_path):
    copy = damaged_copy(staged, tmp_path, bytes)
    text = (copy / MANIFEST).read_text()
    (copy / MANIFEST).write_text(text.replace('"Size": 8192', '"Size": 8193', 1))
    with pytest.raises(IntegrityCheckFailed, match="the manifest's own checksum does not match"):
        check_tars(copy / MANIFEST, scans_of(copy))
    wal = copy / "pg_wal.tar"
    wal.write_bytes(wal.read_bytes()[: 512 + SEG // 2])
    with pytest.raises(IntegrityCheckFailed, match=r"pg_wal\.tar ends in the middle"):
        check_wal_tar(wal, staged / MANIFEST, segment_size=SEG)


def test_an_unlisted_file_fails(staged, tmp_path):
    copy = damaged_copy(staged, tmp_path, bytes)
    extra = tmp_path / "stowaway"
    extra.write_bytes(b"x" * 10)
    with tarfile.open(copy / "extra.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(extra, arcname="base/stowaway")
    scans = {**scans_of(copy), "extra.tar": scan_file(copy / "extra.tar", algorithm="CRC32C")}
    with pytest.raises(IntegrityCheckFailed, match=r'"base/stowaway" is in the backup but not in the manifest'):
        check_tars(copy / MANIFEST, scans)


def test_a_byte_damaged_while_streaming_fails_the_backup(make_cluster, pg, tmp_path, monkeypatch):
    """A byte changed between pg_basebackup's write and the pipeline's read: the backup is FAILED, nothing kept."""
    root = tmp_path / "repo"
    root.mkdir()
    repo = FileRepository(root)
    cluster = make_cluster("primary", pg=pg)
    cluster.init(has_archiving=True, archive_url=repo.url)
    cluster.start()

    class Flipping(io.FileIO):
        """base.tar as read from disk, with one bit changed inside a relation file's pages."""

        def readinto(self, buffer) -> int:  # type: ignore[override]
            before = self.tell()
            n = super().readinto(buffer)
            if n and before <= 3_000_000 < before + n:
                memoryview(buffer)[3_000_000 - before] ^= 0x10
            return n

    monkeypatch.setattr(tailread, "open", lambda path, *_a, **_k: Flipping(path, "rb"), raising=False)
    match = r"FAILED: the backup does not match its backup_manifest: .*(checksum mismatch|tar header after .* damaged)"
    with pytest.raises(IntegrityCheckFailed, match=match):
        physical_backup(dsn=cluster.dsn, repo=repo, kind="full", pg=pg, log=quiet)
    (record,) = repo.list_backups()
    assert record.status == "FAILED"
    assert repo.list(f"backups/{record.id}/") == [f"backups/{record.id}/catalog.json"]
