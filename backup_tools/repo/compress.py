"""Streaming compression as file-like read adapters: "zstd", "gzip" or "none", chosen by name.

Stored format: plain standard streams, so an operator can always fall back to `zstd -d` or `gunzip`.

- "zstd": a sequence of independent zstd frames, one per 1 MiB of input (an empty input is one empty frame), each
  recording its content size and an XXH64 checksum of that content, checked as it is decoded (so the plaintext
  needs no second hash on reading: frames_checksummed). Several threads compress frames at once. Decompression
  never holds more than about one frame of output in memory, however compressible the data (empty pages,
  zero-filled WAL).
- "gzip": one gzip member (RFC 1952); several concatenated members are accepted on reading.
- "none": the bytes unchanged.

The codec is not guessed on restore: the writer records it in the catalog (the backup's options, and the
object name's suffix from `SUFFIXES`). `sniff_codec` recognises zstd and gzip by their magic numbers for
diagnostics only ("none" cannot be told apart from data that happens to start with a magic number).
A truncated, corrupted or empty compressed stream raises IntegrityCheckFailed; decompression never ends
silently in the middle of a frame or member.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

import zstandard

from backup_tools.errors import IntegrityCheckFailed, UsageError
from backup_tools.streams import READ_SIZE, PullReader, as_binary_io, read_exact

CODECS = ("zstd", "gzip", "none")
SUFFIXES = {"zstd": ".zst", "gzip": ".gz", "none": ""}
DEFAULT_LEVELS = {"zstd": 3, "gzip": 6}
FRAME_SIZE = 1 << 20
COMPRESS_THREADS = min(4, os.cpu_count() or 1)  # zstd frames compressed at once (the stored format is the same)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
FRAME_DESCRIPTOR = 4  # offset of a zstd frame's header descriptor byte; its bit 2 flags a content checksum
GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def check_codec(codec: str) -> str:
    """Return the codec name, or raise UsageError naming the valid ones."""
    if codec not in CODECS:
        raise UsageError(f"unknown compression {codec!r}; use one of {', '.join(CODECS)}")
    return codec


def sniff_codec(head: bytes) -> str:
    """Name the codec whose magic number starts `head` ("none" when neither matches); diagnostics only."""
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    return "none"


class _ZstdCompress(PullReader):
    """1 MiB frames compressed by a pool of threads (zstd releases the interpreter lock), yielded in order.

    The stored format is the same sequence of independent frames a single thread writes; up to 2 x threads
    frames are in flight, so compressing frame n+1.. overlaps whatever the reader does with frame n
    (encryption, upload). One compressor per thread: a ZstdCompressor is not thread-safe.
    """

    def __init__(self, src: BinaryIO, level: int, threads: int | None = None):
        super().__init__(src)
        self._level = level
        self._threads = max(1, threads if threads is not None else COMPRESS_THREADS)
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[bytes]] = deque()
        self._started = self._eof = False

    def _compress(self, chunk: bytes) -> bytes:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(
                level=self._level, write_checksum=True, write_content_size=True
            )
        return cctx.compress(chunk)

    def _produce(self) -> bytes | None:
        if self._threads == 1:
            chunk = read_exact(self._src, FRAME_SIZE)
            if not chunk and self._started:
                return None
            self._started = True
            return self._compress(chunk)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="zstd")
        while not self._eof and len(self._pending) < 2 * self._threads:
            chunk = read_exact(self._src, FRAME_SIZE)
            if not chunk and self._started:
                self._eof = True
                break
            self._started = True
            self._pending.append(self._pool.submit(self._compress, chunk))
        if not self._pending:
            self._pool.shutdown(wait=False)  # all done: the pool's threads end now, not at garbage collection
            return None
        return self._pending.popleft().result()

    def close(self) -> None:
        if self._pool is not None:
            for job in self._pending:
                job.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
        super().close()


class _GzipCompress(PullReader):
    def __init__(self, src: BinaryIO, level: int):
        super().__init__(src)
        self._obj = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
        self._flushed = False

    def _produce(self) -> bytes | None:
        if self._flushed:
            return None
        chunk = self._src.read(READ_SIZE)
        if chunk:
            return self._obj.compress(chunk)
        self._flushed = True
        return self._obj.flush()


class _Decompress(PullReader):
    """Feed input to one frame/member decoder at a time, start a new one after each, fail if cut short."""

    name = ""

    def __init__(self, src: BinaryIO):
        super().__init__(src)
        self._pending = b""
        self._dec: Any = None
        self._units = 0

    def _new(self) -> Any:
        raise NotImplementedError

    def _feed(self, data: bytes) -> bytes:
        raise NotImplementedError

    def _tail(self) -> bytes:
        return b""

    def _frame_start(self, data: bytes) -> bytes:
        """See the start of a new frame or member before decoding it; return the data to decode."""
        return data

    def _produce(self) -> bytes | None:
        if self._dec is not None and self._dec.eof:
            self._pending, self._dec = self._dec.unused_data + self._pending, None
        if self._dec is not None and self._tail():
            data = b""
        else:
            data, self._pending = self._pending or self._src.read(READ_SIZE), b""
            if not data and self._dec is None and self._units:
                return None
            if not data:
                what = "is empty" if self._dec is None else "ends in the middle of a frame"
                raise IntegrityCheckFailed(f"{self.name} stream {what} (truncated object); restore from another copy")
        if self._dec is None:
            data = self._frame_start(data)
            self._dec, self._units = self._new(), self._units + 1
        try:
            return self._feed(data)
        except (zstandard.ZstdError, zlib.error) as e:
            raise IntegrityCheckFailed(
                f"{self.name} stream is corrupted ({e}); restore from another backup or copy"
            ) from e


class _ZstdDecompress(_Decompress):
    """Also records whether the frames carry XXH64 content checksums (ours always have: write_checksum).

    The first frame decides `checksummed`; a later frame that differs is refused, as no writer of ours mixes them.
    """

    name = "zstd"
    checksummed: bool | None = None

    def _frame_start(self, data: bytes) -> bytes:
        while len(data) < FRAME_DESCRIPTOR + 1 and (more := self._src.read(READ_SIZE)):
            data += more
        if data[:4] != ZSTD_MAGIC or len(data) <= FRAME_DESCRIPTOR:
            return data  # not a frame header: the decoder says how the stream is damaged
        has = bool(data[FRAME_DESCRIPTOR] & 0x04)
        if self.checksummed is None:
            self.checksummed = has
        elif has != self.checksummed:
            raise IntegrityCheckFailed(
                f"zstd frame {self._units + 1} {'has' if has else 'lacks'} a content checksum, unlike the frames "
                "before it (altered object); restore from another backup or copy"
            )
        return data

    def _new(self) -> Any:
        return zstandard.ZstdDecompressor().decompressobj()

    def _feed(self, data: bytes) -> bytes:
        return self._dec.decompress(data)  # stops at the end of one frame: at most FRAME_SIZE of output


class _GzipDecompress(_Decompress):
    name = "gzip"

    def _new(self) -> Any:
        return zlib.decompressobj(_GZIP_WBITS)

    def _tail(self) -> bytes:
        return self._dec.unconsumed_tail

    def _feed(self, data: bytes) -> bytes:
        return self._dec.decompress(self._dec.unconsumed_tail + data, FRAME_SIZE)  # bounded output


def compressing_reader(src: BinaryIO, *, codec: str, level: int | None = None) -> BinaryIO:
    """Return a stream that yields `src` compressed with `codec` (for Repository.put_stream)."""
    if check_codec(codec) == "none":
        return src
    lvl = DEFAULT_LEVELS[codec] if level is None else level
    raw = _ZstdCompress(src, lvl) if codec == "zstd" else _GzipCompress(src, lvl)
    return as_binary_io(raw)


def zstd_compressing_reader(src: BinaryIO, *, level: int = DEFAULT_LEVELS["zstd"], threads: int) -> BinaryIO:
    """compressing_reader's zstd stream with a chosen number of compressing threads (tests, the benchmark)."""
    return as_binary_io(_ZstdCompress(src, level, threads))


def frames_checksummed(stream: BinaryIO) -> bool:
    """True once a stream from decompressing_reader has shown that its zstd frames carry content checksums.

    Each frame's XXH64 is then checked as it is decoded, so the plaintext needs no second hash on reading.
    """
    return getattr(getattr(stream, "raw", None), "checksummed", None) is True


def decompressing_reader(src: BinaryIO, *, codec: str) -> BinaryIO:
    """Return a stream that yields `src` decompressed; raises IntegrityCheckFailed on corrupt or truncated input."""
    if check_codec(codec) == "none":
        return src
    raw = _ZstdDecompress(src) if codec == "zstd" else _GzipDecompress(src)
    return as_binary_io(raw)
