"""Check tar-format backups against backup_manifest while they stream: sizes and checksums as PostgreSQL computes them.

pg_verifybackup reads tar files only from PostgreSQL 18 on; older majors would need base.tar unpacked again
(about 2 s per GB with tarfile). Instead, TarScan is fed every byte of base.tar as the object pipeline reads
it (while pg_basebackup still writes it) and computes, per member, the size and the checksum the manifest
names (CRC32C by default: crc32c is a C library with the SSE4.2 / ARMv8 instruction, as in the server;
SHA-224/256/384/512 with hashlib; NONE: sizes only). check_tars then compares with backup_manifest the way
pg_verifybackup does: the manifest's own SHA-256, every listed file present with its size and checksum,
no unlisted file (except the ones pg_verifybackup ignores). check_wal_tar checks pg_wal.tar holds every WAL
segment from the backup's start to its end LSN, whole (pg_verifybackup --no-parse-wal parses none either).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backup_tools.errors import IntegrityCheckFailed
from backup_tools.streams import CHUNK

BLOCK = 512
# pg_verifybackup's ignore list: files the server or pg_basebackup may add or change outside the manifest
IGNORED = ("backup_manifest", "pg_wal", "postgresql.auto.conf", "recovery.signal", "standby.signal")
HASHLIB = {"SHA224": "sha224", "SHA256": "sha256", "SHA384": "sha384", "SHA512": "sha512"}


class _Crc32c:
    """CRC32C with hashlib's update/digest shape; the digest is the uint32 in little-endian, as pg_checksum_final."""

    def __init__(self) -> None:
        import crc32c  # C library: hardware CRC32C, releases the interpreter lock on large buffers

        self._crc, self._fn = 0, crc32c.crc32c

    def update(self, data: Any) -> None:
        self._crc = self._fn(data, self._crc)

    def hexdigest(self) -> str:
        return self._crc.to_bytes(4, "little").hex()


class _Sizes:
    """The NONE algorithm: nothing to compute."""

    def update(self, data: Any) -> None:
        pass

    def hexdigest(self) -> str:
        return ""


def new_checksum(algorithm: str) -> Any:
    """A checksum object for a manifest's Checksum-Algorithm name."""
    name = algorithm.upper()
    if name == "CRC32C":
        return _Crc32c()
    if name in HASHLIB:
        return hashlib.new(HASHLIB[name])
    if name == "NONE":
        return _Sizes()
    raise IntegrityCheckFailed(f"backup_manifest names checksum algorithm {algorithm!r}, which is not known")


@dataclass
class Member:
    """A regular file seen in a tar: its size and checksum hex."""

    size: int
    checksum: str


@dataclass
class TarScan:
    """Fed a tar stream in pieces (any split), records every regular file's size and checksum (algorithm)."""

    algorithm: str = "CRC32C"
    prefix: str = ""
    keep: str | None = None  # a member whose content to keep in `kept` (backup_manifest, in a streamed backup)
    members: dict[str, Member] = field(default_factory=dict)
    ended: bool = False
    kept: bytes | None = None
    _keeping: bytearray | None = None
    _head: bytearray = field(default_factory=bytearray)
    _left: int = 0  # content bytes of the current member still to come
    _size: int = 0  # the current member's size
    _pad: int = 0  # padding bytes after it
    _name: str | None = None
    _last: str = ""  # the last member read whole (for messages)
    _sum: Any = None
    _long: str | None = None  # a GNU long name or pax path for the next header
    _meta: bytearray | None = None  # content of a GNU 'L' or pax 'x' member being read

    @property
    def complete(self) -> bool:
        """True when the stream ended with the end-of-archive blocks and no member was cut short."""
        return self.ended and not (self._left or self._pad or self._head)

    def feed(self, data: Any) -> None:
        """Consume the next bytes of the tar stream."""
        view = memoryview(data).cast("B")
        while view:
            if self._left:
                n = min(self._left, len(view))
                if self._meta is not None:
                    self._meta += view[:n]
                else:
                    self._sum.update(view[:n])
                    if self._keeping is not None:
                        self._keeping += view[:n]
                self._left -= n
                view = view[n:]
                if not self._left:
                    self._end_member()
            elif self._pad:
                n = min(self._pad, len(view))
                self._pad -= n
                view = view[n:]
            elif self.ended:
                return  # the zero blocks and record padding after the end
            else:
                n = min(BLOCK - len(self._head), len(view))
                self._head += view[:n]
                view = view[n:]
                if len(self._head) == BLOCK:
                    header, self._head = bytes(self._head), bytearray()
                    self._header(header)

    def _header(self, header: bytes) -> None:
        if header == bytes(BLOCK):
            self.ended = True
            return
        if _octal(header[148:156]) != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            after = f"after {self._last}" if self._last else "at the start"
            raise IntegrityCheckFailed(
                f"the backup does not match its backup_manifest: a tar header {after} is damaged"
            )
        size, kind = _number(header[124:136]), header[156:157]
        name = self._long or _member_name(header)
        self._long = None
        self._left, self._pad, self._size = size, -size % BLOCK, size
        if kind in (b"L", b"x"):  # GNU long name, pax extended header (PostgreSQL writes neither; tar tools may)
            self._meta, self._name = bytearray(), f"{kind.decode()}:{name}"
        elif kind in (b"0", b"\0", b"7"):
            self._name, self._sum = self.prefix + name.removeprefix("./"), new_checksum(self.algorithm)
            self._keeping = bytearray() if self._name == self.keep else None
        else:  # directories, symlinks (pg_tblspc): no content to check
            self._name, self._sum = None, None
            self._left = self._pad = 0
            return
        if not size:
            self._end_member()

    def _end_member(self) -> None:
        if self._meta is not None:
            meta, self._meta = bytes(self._meta), None
            if self._name and self._name.startswith("L:"):
                self._long = meta.rstrip(b"\0").decode("utf-8", "surrogateescape")
            else:
                self._long = _pax_path(meta)
        elif self._name is not None:
            self.members[self._name] = Member(self._size, self._sum.hexdigest())
            self._last = self._name
            if self._keeping is not None:
                self.kept, self._keeping = bytes(self._keeping), None
        self._name, self._sum = None, None


def _octal(field_: bytes) -> int:
    text = field_.rstrip(b"\0 ").lstrip(b" ")
    return int(text, 8) if text else 0


def _number(field_: bytes) -> int:
    """A tar number: octal text, or base-256 when the high bit is set (PostgreSQL's files over 8 GB)."""
    if field_[0] & 0x80:
        return int.from_bytes(bytes([field_[0] & 0x7F]) + field_[1:], "big")
    return _octal(field_)


def _member_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar" and header[345]:
        name = header[345:500].split(b"\0", 1)[0] + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax_path(meta: bytes) -> str | None:
    for record in meta.split(b"\n"):
        _, _, kv = record.partition(b" ")
        key, _, value = kv.partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
    return None


@dataclass(frozen=True)
class ManifestFile:
    """One file a backup_manifest lists."""

    path: str
    size: int
    algorithm: str
    checksum: str


def read_manifest_files(path: Path) -> list[ManifestFile]:
    """The files of a backup_manifest, after checking the manifest's own SHA-256 (as pg_verifybackup does)."""
    raw = path.read_bytes()
    ends = [i for i in (raw.rfind(b"\n"),) if i > 0]
    cut = raw.rfind(b"\n", 0, ends[0]) if ends else -1
    try:
        doc = json.loads(raw)
        want = doc["Manifest-Checksum"]
    except (ValueError, KeyError) as e:
        raise IntegrityCheckFailed(f"{path} is not a readable backup manifest ({e}); take the backup again") from e
    if cut < 0 or hashlib.sha256(raw[: cut + 1]).hexdigest() != want:
        raise IntegrityCheckFailed(
            f"{path}: the manifest's own checksum does not match (damaged); take the backup again"
        )
    files = []
    for f in doc.get("Files", []):
        name = f["Path"] if "Path" in f else bytes.fromhex(f["Encoded-Path"]).decode("utf-8", "surrogateescape")
        files.append(ManifestFile(name, int(f["Size"]), f.get("Checksum-Algorithm", "NONE"), f.get("Checksum", "")))
    return files


def manifest_algorithm(path: Path) -> str:
    """The checksum algorithm a backup_manifest uses (NONE when it lists no file)."""
    files = read_manifest_files(path)
    return files[0].algorithm if files else "NONE"


def tar_prefix(tar_name: str) -> str:
    """Where a tar's members sit in the data directory: base.tar at the top, <oid>.tar under pg_tblspc/<oid>/."""
    stem = tar_name.removesuffix(".tar")
    return f"pg_tblspc/{stem}/" if stem.isdigit() else ""


def scan_file(path: Path, *, algorithm: str) -> TarScan:
    """Scan a finished tar file (what TarScan sees when fed while streaming)."""
    scan = TarScan(algorithm, prefix=tar_prefix(path.name))
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            scan.feed(chunk)
    return scan


def check_tars(manifest: Path, scans: dict[str, TarScan]) -> int:
    """Compare the tars' members with backup_manifest (sizes, checksums, nothing missing or extra); return files checked.

    Raises IntegrityCheckFailed naming the first problems, as pg_verifybackup would report them.
    """
    listed = read_manifest_files(manifest)
    seen: dict[str, Member] = {}
    problems: list[str] = []
    for tar_name, scan in scans.items():
        if not scan.complete:
            problems.append(f"{tar_name} ends in the middle (truncated)")
        seen.update(scan.members)
    for f in listed:
        got = seen.pop(f.path, None)
        if got is None:
            problems.append(f'"{f.path}" is in the manifest but not in the backup')
        elif got.size != f.size:
            problems.append(f'"{f.path}" has size {got.size} in the backup but {f.size} in the manifest')
        elif f.algorithm.upper() != "NONE" and got.checksum != f.checksum.lower():
            problems.append(f'"{f.path}": checksum mismatch ({f.algorithm} {got.checksum} != {f.checksum})')
    problems += [f'"{p}" is in the backup but not in the manifest' for p in seen if not _ignored(p)]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise IntegrityCheckFailed(f"the backup does not match its backup_manifest: {'; '.join(problems[:3])}{more}")
    return len(listed)


def _ignored(path: str) -> bool:
    return any(path == name or path.startswith(name + "/") for name in IGNORED)


def wal_segments(ranges: Iterable[tuple[int, int, int]], segment_size: int) -> set[int]:
    """Segment numbers covering each (timeline, start LSN, end LSN) range."""
    need: set[int] = set()
    for _tli, start, end in ranges:
        need.update(range(start // segment_size, max(end - 1, start) // segment_size + 1))
    return need


def check_wal_tar(path: Path, manifest: Path, *, segment_size: int) -> int:
    """Check pg_wal.tar holds every WAL segment of the manifest's WAL-Ranges, whole; return the segments found."""
    scan = scan_file(path, algorithm="NONE")
    if not scan.complete:
        raise IntegrityCheckFailed(f"{path.name} ends in the middle (truncated); take the backup again")
    return check_wal_members(scan.members, manifest, segment_size=segment_size, where=path.name)


def check_wal_members(members: dict[str, Member], manifest: Path, *, segment_size: int, where: str) -> int:
    """Check tar members (pg_wal.tar's, or base.tar's pg_wal/ when WAL was fetched into it) hold every segment of
    the manifest's WAL-Ranges, whole; return the segments found."""
    doc = json.loads(manifest.read_bytes())
    ranges = [(int(r["Timeline"]), _lsn(r["Start-LSN"]), _lsn(r["End-LSN"])) for r in doc.get("WAL-Ranges", [])]
    per_seg = 0x1_0000_0000 // segment_size
    have: set[int] = set()
    for name, member in members.items():
        base = os.path.basename(name)
        if os.path.dirname(name) in ("", "pg_wal") and len(base) == 24 and all(c in "0123456789ABCDEF" for c in base):
            if member.size != segment_size:
                raise IntegrityCheckFailed(f"{where}: WAL segment {base} is {member.size} bytes, not {segment_size}")
            have.add(int(base[8:16], 16) * per_seg + int(base[16:24], 16))
    missing = sorted(wal_segments(ranges, segment_size) - have)
    if missing:
        raise IntegrityCheckFailed(
            f"{where} lacks WAL segment number(s) {', '.join(map(str, missing[:5]))} the backup needs; take it again"
        )
    return len(have)


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)
