"""Test helper streams shared by test modules."""

from __future__ import annotations

import io


class Trickle(io.RawIOBase):
    """A source that returns at most `step` bytes per read, like a pipe under load."""

    def __init__(self, data: bytes, *, step: int):
        self._src, self._step = io.BytesIO(data), step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        piece = self._src.read(min(self._step, len(buffer)))
        buffer[: len(piece)] = piece
        return len(piece)
