"""Read a file while another process is still appending to it (pg_basebackup's base.tar), to its final end.

pg_basebackup writes each tablespace tar (base.tar) front to back and never seeks back in it (pg_wal.tar,
written by the WAL streamer, is different: its headers are rewritten on close). So backup/physical.py hashes,
compresses and stores base.tar while it is being written instead of in a second pass afterwards; the
size read is compared with the final size, and a tap (backup/manifest.py's TarScan) checksums every member
as it passes, for the backup_manifest check.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backup_tools.errors import IntegrityCheckFailed, ToolFailed

POLL = 0.005


class Background:
    """Run a function in a thread; result() waits and re-raises its error."""

    def __init__(self, func: Callable[..., Any], /, **kwargs: Any):
        self._value: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(func, kwargs), daemon=True)
        self._thread.start()

    def _run(self, func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        try:
            self._value = func(**kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised by result()
            self.error = e

    @property
    def done(self) -> bool:
        """True once the function returned or raised."""
        return not self._thread.is_alive()

    def result(self) -> Any:
        """Wait for the function; return its value or raise its error."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self._value


class GrowingFile(io.RawIOBase):
    """The bytes of path as its writer appends them; EOF only once the writer finished and all was read."""

    def __init__(self, path: Path, writer: Background, *, tap: Callable[[memoryview], Any] | None = None):
        self._path, self._writer, self._f, self._tap = path, writer, None, tap
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while True:
            finished = self._writer.done  # sampled before reading: bytes written before it are visible below
            if finished and self._writer.error is not None:
                raise ToolFailed(f"{self._path.name} is incomplete: {self._writer.error}") from self._writer.error
            if self._f is None and self._path.exists():
                self._f = open(self._path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
            n = self._f.readinto(buffer) if self._f is not None else 0
            if n:
                self.size += n
                if self._tap is not None:  # e.g. the backup_manifest check (backup/manifest.py) sees every byte
                    self._tap(memoryview(buffer)[:n])
                return n
            if finished:
                if self._f is None:
                    raise IntegrityCheckFailed(f"{self._path} was never written; the backup is incomplete")
                final = self._path.stat().st_size
                if final != self.size:
                    raise IntegrityCheckFailed(
                        f"{self._path} is {final} bytes but {self.size} were read; take it again"
                    )
                return 0
            time.sleep(POLL)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        super().close()
