"""Tar streams both ways: a plain backup directory as a tar stream (TarPipe), and unpacking with native tar."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

from backup_tools.errors import IntegrityCheckFailed
from backup_tools.repo.objects import drain
from backup_tools.streams import CHUNK, widen_pipe


class TarPipe:
    """A plain-format backup directory as a tar stream, written by a thread into a pipe."""

    def __init__(self, directory: Path):
        read_fd, write_fd = os.pipe()
        self.stream: BinaryIO = os.fdopen(read_fd, "rb")
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, args=(directory, write_fd), daemon=True)
        self._thread.start()

    def _write(self, directory: Path, write_fd: int) -> None:
        try:
            with (
                os.fdopen(write_fd, "wb") as out,
                tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar,
            ):
                for entry in sorted(directory.iterdir()):
                    tar.add(entry, arcname=entry.name)
        except BaseException as e:  # noqa: BLE001 - handed to the reader
            self._error = e

    def read(self, n: int = -1) -> bytes:
        """Read tar bytes; at the end, raise if the writer failed (so no truncated object is stored)."""
        data = self.stream.read(n)
        if not data:
            self._thread.join()
            if self._error is not None:
                raise IntegrityCheckFailed(f"could not tar the staged backup: {self._error}") from self._error
        return data

    def close(self) -> None:
        """Close the read end and wait for the writer."""
        self.stream.close()
        self._thread.join(timeout=5)


@functools.cache
def _tar_program() -> list[str] | None:
    """The native tar command line for extraction (GNU tar: 1 MiB records, short pipe reads re-read)."""
    program = shutil.which("tar")
    if program is None:
        return None
    version = subprocess.run([program, "--version"], capture_output=True, text=True, check=False).stdout
    return [program, "-B", "-b", "2048"] if "GNU tar" in version else [program]


def untar(stream: BinaryIO, target: Path, *, path: Path | None = None) -> None:
    """Unpack a tar stream into target: with the native tar program when present (faster), else tarfile.

    With path (the same bytes as a local file), tar reads the file itself while the stream is drained beside
    it, so its checksums are still verified; any mismatch raises after tar finished (the caller discards target).
    """
    command = _tar_program()
    if command is None:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar:
            tar.extractall(target, filter="tar")
        drain(stream)
        return
    source = os.fspath(path) if path is not None else "-"
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*command, "-x", "-f", source, "-C", os.fspath(target)],
                                stdin=subprocess.PIPE if path is None else subprocess.DEVNULL, stderr=err)  # fmt: skip
        try:
            if path is not None:
                drain(stream)
            else:
                assert proc.stdin is not None
                widen_pipe(proc.stdin.fileno())  # fewer, larger pipe transfers
                _feed(stream, proc.stdin)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0:
            err.seek(0)
            raise tarfile.ReadError(
                f"tar exited {proc.returncode}: {err.read().decode(errors='replace').strip()[-300:]}"
            )


def _feed(stream: BinaryIO, pipe: BinaryIO) -> None:
    try:
        while chunk := stream.read(CHUNK):  # checksums are verified as the stream reaches its end
            pipe.write(chunk)
        pipe.close()
    except BrokenPipeError:
        pass  # tar stopped reading: its exit status and stderr say why
