"""Streaming compression adapters: round trips, standard formats, bounded memory, fail-closed decoding."""

from __future__ import annotations

import gzip
import io
import os
import tracemalloc

import pytest
import zstandard

from backup_tools.errors import IntegrityCheckFailed, UsageError
from backup_tools.repo.compress import (
    CODECS,
    FRAME_SIZE,
    check_codec,
    compressing_reader,
    decompressing_reader,
    sniff_codec,
)
from tests.support.streams import Trickle

MiB = 1 << 20
SIZES = [0, 1, FRAME_SIZE - 1, FRAME_SIZE, FRAME_SIZE + 1, 5 * MiB + 7]


def sample(size: int) -> bytes:
    """Half random, half repetitive text: both incompressible and compressible runs."""
    half = size // 2
    text = (b"INSERT INTO t VALUES (42, 'pgdrill');\n" * (size // 38 + 1))[: size - half]
    return os.urandom(half) + text


def compress(data: bytes, codec: str) -> bytes:
    return compressing_reader(io.BytesIO(data), codec=codec).read()


def decompress(data: bytes, codec: str) -> bytes:
    return decompressing_reader(io.BytesIO(data), codec=codec).read()


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"{n}B")
def test_round_trip(codec: str, size: int) -> None:
    data = sample(size)
    assert decompress(compress(data, codec), codec) == data


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_compresses_repetitive_data(codec: str) -> None:
    data = b"0123456789abcdef" * (MiB // 4)
    assert len(compress(data, codec)) < len(data) // 50


def test_zstd_output_is_standard_multi_frame_zstd() -> None:
    data = sample(3 * MiB + 1)
    stored = compress(data, "zstd")
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored), read_across_frames=True)
    assert reader.read() == data
    assert zstandard.get_frame_parameters(stored).content_size == FRAME_SIZE


@pytest.mark.parametrize("threads", [2, 4])
def test_zstd_threads_write_the_same_frames_as_one_thread(threads: int) -> None:
    """Frames compressed by a pool come out in order and byte-identical: old and new repositories read alike."""
    from backup_tools.repo.compress import zstd_compressing_reader

    data = sample(9 * MiB + 5)
    one = zstd_compressing_reader(io.BytesIO(data), threads=1).read()
    many = zstd_compressing_reader(Trickle(data, step=100_000), threads=threads).read()
    assert many == one and decompress(many, "zstd") == data


def test_gzip_output_is_standard_gzip_and_accepts_concatenated_members() -> None:
    data = sample(MiB + 3)
    stored = compress(data, "gzip")
    assert gzip.decompress(stored) == data
    assert decompress(stored + gzip.compress(b"tail"), "gzip") == data + b"tail"


def test_none_passes_bytes_through_unchanged() -> None:
    data = sample(1000)
    assert compress(data, "none") == data


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_sniff_codec_recognises_magic(codec: str) -> None:
    assert sniff_codec(compress(b"x", codec)[:8]) == codec
    assert sniff_codec(b"PGDMP\x01") == "none"


def test_unknown_codec_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="lz4.*zstd, gzip, none"):
        compressing_reader(io.BytesIO(b""), codec="lz4")
    with pytest.raises(UsageError):
        check_codec("ZSTD")


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_short_reads_from_source_are_handled(codec: str) -> None:
    data = sample(FRAME_SIZE + 100)
    stored = compressing_reader(Trickle(data, step=7), codec=codec).read()
    out = decompressing_reader(Trickle(stored, step=7), codec=codec).read()
    assert out == data
    if codec == "zstd":  # short reads must not shrink frames (each frame is a full FRAME_SIZE of input)
        assert zstandard.get_frame_parameters(stored).content_size == FRAME_SIZE


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
@pytest.mark.parametrize("cut", [1, 5, 0.5], ids=["last-byte", "last-5", "half"])
def test_truncated_stream_raises(codec: str, cut: float) -> None:
    stored = compress(sample(2 * MiB), codec)
    keep = len(stored) - cut if isinstance(cut, int) else int(len(stored) * cut)
    with pytest.raises(IntegrityCheckFailed, match="truncated"):
        decompress(stored[:keep], codec)


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_truncated_at_frame_boundary_of_empty_input_raises(codec: str) -> None:
    with pytest.raises(IntegrityCheckFailed, match="empty"):
        decompress(b"", codec)


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_corrupted_stream_raises(codec: str) -> None:
    stored = bytearray(compress(sample(MiB), codec))
    stored[len(stored) // 2] ^= 0x40
    with pytest.raises(IntegrityCheckFailed, match="corrupted"):
        decompress(bytes(stored), codec)


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_trailing_garbage_raises(codec: str) -> None:
    stored = compress(sample(1000), codec)
    with pytest.raises(IntegrityCheckFailed):
        decompress(stored + b"garbage after the last frame", codec)


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_memory_stays_bounded_on_highly_compressible_data(codec: str) -> None:
    size = 128 * MiB
    stored = compress(bytes(size), codec)  # zero pages: ratio in the thousands
    tracemalloc.start()
    try:
        reader, total = decompressing_reader(io.BytesIO(stored), codec=codec), 0
        while chunk := reader.read(64 * 1024):
            total += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == size
    assert peak < 8 * MiB, f"decompression peaked at {peak / MiB:.1f} MiB"


def test_closing_adapter_closes_source() -> None:
    src = io.BytesIO(b"abc")
    compressing_reader(src, codec="zstd").close()
    assert src.closed
