"""Secret scan helpers: a /proc watcher, a harvester of the passwords and keys a run writes, and the search itself."""

from __future__ import annotations

import base64
import contextlib
import os
import threading
import time
from pathlib import Path

SECRET_NAMES = ("pgpass",)  # the suite's 0600 passfiles (Cluster.passfile); key files end in .key


class ProcWatcher(threading.Thread):
    """Samples the command lines and environments of readable processes until stopped; with harvest_under, also
    reads every passfile and key file that appears under that directory while it exists (clusters remove theirs)."""

    def __init__(self, interval: float = 0.003, *, harvest_under: Path | None = None):
        super().__init__(daemon=True)
        self.interval, self.samples, self.rounds, self.stop = interval, set(), 0, threading.Event()
        self.harvest_under, self.secret_files = harvest_under, {}

    def run(self) -> None:
        harvested = 0.0
        while not self.stop.is_set():
            for pid in (p for p in os.listdir("/proc") if p.isdigit()):
                for what in ("cmdline", "environ"):
                    with contextlib.suppress(OSError):
                        self.samples.add(Path(f"/proc/{pid}/{what}").read_bytes())
            if self.harvest_under is not None and time.monotonic() - harvested > 1.0:  # clusters live for seconds
                self.harvest()
                harvested = time.monotonic()
            self.rounds += 1
            time.sleep(self.interval)
        if self.harvest_under is not None:
            self.harvest()

    def harvest(self) -> None:
        """Read the passfiles and key files under harvest_under now."""
        for pattern in (*SECRET_NAMES, "*.key"):
            with contextlib.suppress(OSError):
                for path in list(self.harvest_under.rglob(pattern)):
                    with contextlib.suppress(OSError):
                        self.secret_files[str(path)] = path.read_bytes()


def passwords_of(passfile_text: bytes) -> set[bytes]:
    """The passwords of a libpq passfile (host:port:db:user:password lines; \\: and \\\\ escapes)."""
    out = set()
    for line in passfile_text.splitlines():
        fields, current, escaped = [], b"", False
        for byte in line:
            char = bytes([byte])
            if escaped:
                current, escaped = current + char, False
            elif char == b"\\":
                escaped = True
            elif char == b":":
                fields.append(current)
                current = b""
            else:
                current += char
        if len(fields) == 4 and current:
            out.add(current)
    return out


def needles_of(secret_files: dict[str, bytes]) -> dict[bytes, str]:
    """Every secret in harvested files -> what it is: passwords of passfiles, key files' text and raw key bytes."""
    needles: dict[bytes, str] = {}
    for name, data in secret_files.items():
        if name.endswith(".key"):
            text = data.strip()
            needles[text] = f"key text of {Path(name).name}"
            with contextlib.suppress(ValueError):
                needles[base64.b64decode(text.split()[-1])] = f"raw key of {Path(name).name}"
        else:
            needles |= {pw: f"a password of {Path(name).name}" for pw in passwords_of(data)}
    return needles


def files_under(root: Path, *, skip: set[str] = frozenset()) -> dict[str, bytes]:
    """Every regular file under root (not the secret files themselves), by path relative to root."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and str(path) not in skip:
            if path.name in SECRET_NAMES or path.suffix == ".key":
                continue
            with contextlib.suppress(OSError):
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


def hits(haystacks: dict[str, bytes], needles: dict[bytes, str]) -> list[str]:
    """'<what> in <where>' for every needle found in a haystack (needles shorter than 12 bytes are not secrets)."""
    return [f"{what} in {where}" for where, data in haystacks.items() for needle, what in needles.items()
            if len(needle) >= 12 and needle in data]  # fmt: skip
