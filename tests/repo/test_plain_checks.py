"""Reading an object back checks its plaintext: by each zstd frame's own checksum, else by the recorded sha256."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
import zstandard

from backup_tools.errors import IntegrityCheckFailed
from backup_tools.repo.base import FileRepository
from backup_tools.repo.compress import FRAME_SIZE, decompressing_reader, frames_checksummed
from backup_tools.repo.objects import open_object, store_object

KEY = "backups/b1/base.tar.zst"


def frames(data: bytes, *, checksum: bool) -> bytes:
    """data as 1 MiB zstd frames, with or without content checksums."""
    cctx = zstandard.ZstdCompressor(write_checksum=checksum, write_content_size=True)
    return b"".join(cctx.compress(data[i : i + FRAME_SIZE]) for i in range(0, len(data), FRAME_SIZE))


def put_raw(repo: FileRepository, stored: bytes) -> dict:
    """Store bytes as they are; the catalog fields open_object checks them against."""
    info = repo.put_stream(KEY, io.BytesIO(stored))
    return {"size": info.size, "sha256": info.sha256}


def read_back(repo: FileRepository, fields: dict, *, plain: bytes) -> bytes:
    with open_object(repo, KEY, codec="zstd", scope="b1", plain_size=len(plain),
                     plain_sha256=hashlib.sha256(plain).hexdigest(), **fields) as stream:  # fmt: skip
        return stream.read()


def test_our_zstd_objects_carry_frame_checksums(tmp_path: Path) -> None:
    repo = FileRepository(tmp_path)
    data = os.urandom(3 * FRAME_SIZE + 5)
    stored = store_object(repo, KEY, io.BytesIO(data), codec="zstd", scope="b1")
    stream = decompressing_reader(repo.open_raw(KEY), codec="zstd")
    assert stream.read() == data and frames_checksummed(stream)
    assert read_back(repo, {"size": stored.size, "sha256": stored.sha256}, plain=data) == data


def test_a_frame_altered_before_the_object_was_hashed_is_caught_by_its_checksum(tmp_path: Path) -> None:
    """The stored sha256 matches (the damage came first), so only the frame's XXH64 can tell."""
    data = os.urandom(2 * FRAME_SIZE)  # incompressible: raw blocks, where a flipped byte still decodes
    stored = bytearray(frames(data, checksum=True))
    stored[FRAME_SIZE // 2] ^= 0x01
    repo = FileRepository(tmp_path)
    with pytest.raises(IntegrityCheckFailed, match="corrupted"):
        read_back(repo, put_raw(repo, bytes(stored)), plain=data)


def test_frames_without_checksums_are_checked_against_the_plaintext_sha256(tmp_path: Path) -> None:
    data = os.urandom(2 * FRAME_SIZE)
    stored = bytearray(frames(data, checksum=False))
    stored[FRAME_SIZE // 2] ^= 0x01  # decodes to other bytes of the same size
    repo = FileRepository(tmp_path)
    with pytest.raises(IntegrityCheckFailed, match="sha256"):
        read_back(repo, put_raw(repo, bytes(stored)), plain=data)
    stream = decompressing_reader(io.BytesIO(frames(data, checksum=False)), codec="zstd")
    assert stream.read() == data and not frames_checksummed(stream)


def test_a_frame_without_a_checksum_after_checksummed_ones_is_refused(tmp_path: Path) -> None:
    data = os.urandom(2 * FRAME_SIZE)
    mixed = frames(data[:FRAME_SIZE], checksum=True) + frames(data[FRAME_SIZE:], checksum=False)
    repo = FileRepository(tmp_path)
    with pytest.raises(IntegrityCheckFailed, match="frame 2 lacks a content checksum"):
        read_back(repo, put_raw(repo, mixed), plain=data)
