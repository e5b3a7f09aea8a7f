"""WAL archiving: archive_command / restore_command contracts, checksums, encryption, continuity, streaming."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from backup_tools.catalog import IDENTITY_KEY
from backup_tools.errors import IntegrityCheckFailed, RepositoryError, UsageError, WalMissing
from backup_tools.repo.base import FileRepository
from backup_tools.repo.objects import store_object
from backup_tools.security.keys import generate_key_file_text
from backup_tools.wal.archive import (
    WAL_FETCH_ABORT_EXIT,
    check_continuity,
    repo_system_identifier,
    segment_system_identifier,
    wal_fetch,
    wal_push,
)
from backup_tools.wal.lsn import parse_segment_name
from backup_tools.wal.streamer import WalStreamer

SEG = "000000010000000000000003"


SEGMENT_SIZE = 16 * 1024 * 1024


def segment_header(name: str, *, sysid: int = 7311111111111111111) -> bytes:
    """The long page header that starts WAL segment `name` of database system sysid."""
    seg = parse_segment_name(name.removesuffix(".partial"))
    return struct.pack("<HHIQIIQII", 0xD118, 0x0002, seg.timeline, seg.start_lsn, 0, 0, sysid, SEGMENT_SIZE, 8192)


def fake_segment(path: Path, *, sysid: int = 7311111111111111111, fill: bytes = b"x", header_of: str = "",
                 size: int = SEGMENT_SIZE) -> Path:  # fmt: skip
    """A file shaped like WAL segment path.name (or header_of): its long page header, some data, zeros to size."""
    with open(path, "wb") as f:
        f.write(segment_header(header_of or path.name, sysid=sysid) + fill * 100_000)
        f.truncate(size)  # sparse: the rest reads as zeros, like a segment's unused pages
    return path


def backup_tools(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as PostgreSQL would (python -m backup_tools)."""
    return subprocess.run([sys.executable, "-m", "backup_tools", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def repo(tmp_path: Path) -> FileRepository:
    root = tmp_path / "repo"
    root.mkdir()
    return FileRepository(root)


def test_push_then_fetch_round_trips_and_checks_sha256(repo, tmp_path):
    seg = fake_segment(tmp_path / SEG)
    pushed = wal_push(seg, repo=repo)
    assert not pushed.already_archived
    stored = (repo.root / "wal" / SEG).read_bytes()
    assert stored.startswith(b"PGDW1\n") and len(stored) < seg.stat().st_size  # self-describing and compressed
    out = tmp_path / "restored"
    assert wal_fetch(SEG, out, repo=repo) == seg.stat().st_size
    assert out.read_bytes() == seg.read_bytes()


def test_identical_push_is_success_and_different_content_is_refused(repo, tmp_path):
    seg = fake_segment(tmp_path / SEG)
    wal_push(seg, repo=repo)
    before = (repo.root / "wal" / SEG).read_bytes()
    assert wal_push(seg, repo=repo).already_archived
    (tmp_path / "other").mkdir()
    other = fake_segment(tmp_path / "other" / SEG, fill=b"y")
    with pytest.raises(RepositoryError, match=r"already archived .* DIFFERENT content .*; refusing to overwrite"):
        wal_push(other, repo=repo)
    assert (repo.root / "wal" / SEG).read_bytes() == before
    done = backup_tools("wal-push", str(other), "--repo", repo.url)
    assert done.returncode == 1 and "DIFFERENT content" in done.stderr
    assert (repo.root / "wal" / SEG).read_bytes() == before


def test_fetch_missing_exits_1_and_damaged_exits_above_125(repo, tmp_path):
    with pytest.raises(WalMissing):
        wal_fetch(SEG, tmp_path / "x", repo=repo)
    done = backup_tools("wal-fetch", SEG, str(tmp_path / "x"), "--repo", repo.url)
    assert done.returncode == 1 and not (tmp_path / "x").exists()
    wal_push(fake_segment(tmp_path / SEG), repo=repo)
    stored = repo.root / "wal" / SEG
    data = bytearray(stored.read_bytes())
    data[-10] ^= 0x01  # one bit flipped in the compressed payload
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityCheckFailed, match=SEG):
        wal_fetch(SEG, tmp_path / "x", repo=repo)
    done = backup_tools("wal-fetch", SEG, str(tmp_path / "x"), "--repo", repo.url)
    assert done.returncode == WAL_FETCH_ABORT_EXIT > 125
    assert "stopping recovery" in done.stderr and SEG in done.stderr
    assert not (tmp_path / "x").exists()


def test_fetch_from_an_unreadable_repository_stops_recovery(tmp_path):
    done = backup_tools("wal-fetch", SEG, str(tmp_path / "x"), "--repo", "file:///nonexistent/dir")
    assert done.returncode in (1, WAL_FETCH_ABORT_EXIT)  # a missing directory holds no file: end of archive
    done = backup_tools("wal-fetch", SEG, str(tmp_path / "x"), "--repo", "ftp://nowhere")
    assert done.returncode == WAL_FETCH_ABORT_EXIT


def test_history_and_partial_files_are_archived(repo, tmp_path):
    history = tmp_path / "00000002.history"
    history.write_text("1\t0/3000000\tbefore 2026-11-22 10:00:00+00\n")
    partial = fake_segment(tmp_path / f"{SEG}.partial")
    wal_push(history, repo=repo)
    wal_push(partial, repo=repo)
    wal_fetch("00000002.history", tmp_path / "h", repo=repo)
    assert (tmp_path / "h").read_text() == history.read_text()
    wal_fetch(f"{SEG}.partial", tmp_path / "p", repo=repo)
    assert (tmp_path / "p").read_bytes() == partial.read_bytes()
    with pytest.raises(UsageError, match="not a WAL file name"):
        (tmp_path / "junk.txt").write_text("x")
        wal_push(tmp_path / "junk.txt", repo=repo)


def test_encrypted_wal_needs_the_key(repo, tmp_path):
    key = tmp_path / "key"
    key.write_text(generate_key_file_text())
    seg = fake_segment(tmp_path / SEG)
    wal_push(seg, repo=repo, key_file=key)
    assert b"x" * 64 not in (repo.root / "wal" / SEG).read_bytes()
    wal_fetch(SEG, tmp_path / "out", repo=repo, key_file=key)
    assert (tmp_path / "out").read_bytes() == seg.read_bytes()
    done = backup_tools("wal-fetch", SEG, str(tmp_path / "out2"), "--repo", repo.url)
    assert done.returncode == WAL_FETCH_ABORT_EXIT and "key" in done.stderr


def test_wal_of_another_system_is_refused(repo, tmp_path):
    seg = fake_segment(tmp_path / SEG, sysid=42)
    assert segment_system_identifier(seg) == "42"
    repo.put_bytes(IDENTITY_KEY, b'{"system_identifier": "99", "pg_major": 18}')
    with pytest.raises(RepositoryError, match="comes from database system 42, but .* belongs to system 99"):
        wal_push(seg, repo=repo)
    assert not repo.exists(f"wal/{SEG}")


def test_continuity_reports_gaps_as_ranges_per_timeline(repo, tmp_path):
    for name in ("000000010000000000000001", "000000010000000000000002", "000000010000000000000005",
                 "000000020000000000000005", "000000020000000000000009"):  # fmt: skip
        wal_push(fake_segment(tmp_path / name), repo=repo)
    report = check_continuity(repo)
    assert not report.ok
    assert [(g.first, g.last, g.count) for g in report.gaps[1]] == [
        ("000000010000000000000003", "000000010000000000000004", 2)
    ]
    assert [(g.first, g.last, g.count) for g in report.gaps[2]] == [
        ("000000020000000000000006", "000000020000000000000008", 3)
    ]
    assert (
        "GAP on timeline 2: 000000020000000000000006 .. 000000020000000000000008 (3 segment(s) missing)"
        in report.lines()
    )


@pytest.mark.integration
def test_streamer_receives_wal_through_a_slot_synchronously(make_cluster, pg_bin, repo, tmp_path):
    from backup_tools.wal.streamer import require_sync

    primary = make_cluster("primary")
    primary.init(allows_streaming=True)
    primary.start()
    streamer = WalStreamer(dsn=primary.dsn, directory=tmp_path / "received", pg=pg_bin, synchronous=True, log=print)
    streamer.start()
    try:
        require_sync(primary.dsn)
        primary.poll_query_until(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgdrill_receivewal'", "sync"
        )
        primary.safe_sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")  # waits for the streamer's flush
        (name,) = primary.safe_sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0]
        primary.safe_sql("SELECT pg_switch_wal()")
        primary.safe_sql("CREATE TABLE u (a int)")
        primary.poll_query_until(f"SELECT count(*) > 0 FROM pg_ls_dir('pg_wal') f WHERE f > '{name}'", "t")
        deadline = __import__("time").monotonic() + 30
        while name not in streamer.pushed and __import__("time").monotonic() < deadline:
            streamer.push_completed(repo)
        assert name in streamer.pushed
        require_sync(primary.dsn, on=False)
    finally:
        streamer.stop(repo=repo, push_partial=True)
        streamer.drop_slot()
    assert repo.exists(f"wal/{name}")
    assert any(n.endswith(".partial") for n in streamer.pushed)
    assert not primary.safe_sql("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgdrill_receivewal'")


OTHER = "000000010000000000000005"


def test_fetch_refuses_an_object_stored_under_another_segment_name(repo, tmp_path):
    wal_push(fake_segment(tmp_path / SEG), repo=repo)
    (repo.root / "wal" / OTHER).write_bytes((repo.root / "wal" / SEG).read_bytes())  # a copy mistake
    with pytest.raises(IntegrityCheckFailed, match=rf"wal/{OTHER} in .* is not the WAL file {OTHER}: it was archived as {SEG}"):
        wal_fetch(OTHER, tmp_path / "x", repo=repo)
    done = backup_tools("wal-fetch", OTHER, str(tmp_path / "x"), "--repo", repo.url)
    assert done.returncode == WAL_FETCH_ABORT_EXIT and f"archived as {SEG}" in done.stderr
    assert not (tmp_path / "x").exists()


def test_fetch_refuses_content_of_another_segment_behind_a_matching_envelope(repo, tmp_path):
    wrong = fake_segment(tmp_path / OTHER, header_of=SEG)  # e.g. written by a sync tool or an older wal-push
    store_object(repo, f"wal/{OTHER}", wrong, codec="zstd", sealing=None, scope="wal", envelope={"name": OTHER})
    with pytest.raises(IntegrityCheckFailed, match=rf"is not the WAL file {OTHER}: it holds segment {SEG} \(pageaddr 0/3000000\)"):
        wal_fetch(OTHER, tmp_path / "x", repo=repo)
    assert not (tmp_path / "x").exists()
    short = tmp_path / "short" / OTHER
    short.parent.mkdir()
    short.write_bytes(segment_header(OTHER) + b"x" * 1000)
    store_object(repo, f"wal/{OTHER}.partial", short, codec="none", sealing=None, scope="wal", envelope={})
    assert wal_fetch(f"{OTHER}.partial", tmp_path / "p", repo=repo) == short.stat().st_size  # a .partial may be short
    repo.delete(f"wal/{OTHER}")
    store_object(repo, f"wal/{OTHER}", short, codec="none", sealing=None, scope="wal", envelope={"name": OTHER})
    with pytest.raises(IntegrityCheckFailed, match=r"it has 1040 bytes, not the 16777216 of a whole segment"):
        wal_fetch(OTHER, tmp_path / "x", repo=repo)


def test_fetch_refuses_wal_of_another_system_than_the_repository(repo, tmp_path):
    wal_push(fake_segment(tmp_path / SEG, sysid=42), repo=repo)  # before a backup claimed the repository
    repo.put_bytes(IDENTITY_KEY, b'{"system_identifier": "99", "pg_major": 18}', overwrite=True)
    with pytest.raises(IntegrityCheckFailed, match="archived from database system 42, but the repository belongs to 99"):
        wal_fetch(SEG, tmp_path / "x", repo=repo)
    repo.put_bytes(IDENTITY_KEY, b'{"system_identifier": "b\'42\'", "pg_major": 18}', overwrite=True)  # SQL_ASCII bug
    assert repo_system_identifier(repo) == "42"
    assert wal_fetch(SEG, tmp_path / "x", repo=repo) == SEGMENT_SIZE


@pytest.mark.integration
def test_wal_stream_verb_pushes_on_request_and_everything_when_stopped(make_cluster, pg_bin, repo, tmp_path):
    import signal

    from backup_tools.wal.streamer import require_sync

    primary = make_cluster("primary")
    primary.init(allows_streaming=True)
    primary.start()
    argv = [sys.executable, "-m", "backup_tools", "wal-stream", "--dsn", primary.dsn, "--dir", str(tmp_path / "wal"),
            "--repo", repo.url, "--synchronous", "--slot", "cli_stream", "--pg-bin", str(pg_bin.bindir)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "streaming\n"
        require_sync(primary.dsn, app_name="pgdrill_receivewal")
        primary.safe_sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")  # waits for the receiver's flush
        (name,) = primary.safe_sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0]
        primary.safe_sql("SELECT pg_switch_wal()")
        primary.safe_sql("CREATE TABLE u (a int)")  # the next segment holds a commit: the switched one is complete
        require_sync(primary.dsn, on=False)
        pushed: list[str] = []
        for _ in range(50):  # pg_receivewal renames a segment once it has all of it
            proc.send_signal(signal.SIGUSR1)
            for line in iter(proc.stdout.readline, "flushed\n"):
                assert line.startswith("pushed "), f"wal-stream said {line!r} instead of flushing"
                pushed.append(line.split()[1])
            if name in pushed:
                break
        assert name in pushed and repo.exists(f"wal/{name}")
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    partial = [line.split()[1] for line in rest.splitlines() if line.endswith(".partial")]
    assert partial and repo.exists(f"wal/{partial[0]}") and "### Stopped pg_receivewal" in err
