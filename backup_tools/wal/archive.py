"""WAL archiving: wal-push (archive_command contract), wal-fetch (restore_command contract), continuity check.

Each WAL file (segment, .partial, .history, .backup) is stored as one self-describing object
`wal/<name>` (see repo/objects.py) whose header records its sha256, size, codec, encryption and the
system identifier read from the segment's page header; wal-fetch verifies all of it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from backup_tools.catalog import WAL, BackupRecord, clean_system_identifier
from backup_tools.errors import DocumentMissing, IntegrityCheckFailed, RepositoryError, UsageError, WalMissing
from backup_tools.repo.base import Repository
from backup_tools.repo.objects import (
    copy_to_file,
    drain,
    new_sealing,
    open_envelope,
    read_envelope,
    store_object,
    unseal_envelope,
)
from backup_tools.repo.policy import IDENTITY_KEY, enforce, read_identity  # noqa: F401  (IDENTITY_KEY re-exported)
from backup_tools.streams import sha256_of
from backup_tools.wal.lsn import (
    WalGap,
    classify,
    find_gaps,
    format_lsn,
    parse_lsn,
    parse_segment_name,
    segment_name,
    segments_between,
)

# PostgreSQL aborts recovery when restore_command exits above 125 (as for a signal), instead of
# treating the failure as "end of archive" and promoting early with data missing.
WAL_FETCH_ABORT_EXIT = 200
_LONG_HEADER = struct.Struct("<HHIQIIQII")  # magic, info, tli, pageaddr, rem_len, pad, sysid, seg_size, blcksz
XLP_LONG_HEADER = 0x0002
WAL_MAGIC_RANGE = (0xD100, 0xD1FF)  # XLOG_PAGE_MAGIC changes with each major (0xD10D in 14 .. 0xD118 in 18)


class LookUp:
    """Sentinel: read the repository's system identifier."""


@dataclass(frozen=True)
class WalPushResult:
    """What wal-push did with one file."""

    name: str
    size: int
    sha256: str
    already_archived: bool


@dataclass(frozen=True)
class WalPageHeader:
    """The fields of a WAL segment's first (long) page header that say which segment it really is."""

    magic: int
    timeline: int
    pageaddr: int
    system_identifier: str
    segment_size: int

    def describe(self) -> str:
        """Which segment of which system this header belongs to, for error messages."""
        name = segment_name(self.timeline, self.pageaddr, wal_segment_size=self.segment_size)
        return f"segment {name} (pageaddr {format_lsn(self.pageaddr)}) of database system {self.system_identifier}"


def read_page_header(head: bytes) -> WalPageHeader | None:
    """Parse a long WAL page header from a segment's first bytes (None when they are not one)."""
    if len(head) < _LONG_HEADER.size:
        return None
    magic, info, tli, addr, _rem, _pad, sysid, seg_size, _blck = _LONG_HEADER.unpack(head[: _LONG_HEADER.size])
    if not (WAL_MAGIC_RANGE[0] <= magic <= WAL_MAGIC_RANGE[1]) or not info & XLP_LONG_HEADER or not sysid:
        return None
    if seg_size < 1 << 20 or seg_size > 1 << 30 or seg_size & (seg_size - 1):
        return None
    return WalPageHeader(magic, tli, addr, str(sysid), seg_size)


def segment_system_identifier(path: Path) -> str | None:
    """The database system identifier in a WAL segment's long page header (None for other files)."""
    with open(path, "rb") as f:
        header = read_page_header(f.read(_LONG_HEADER.size))
    return header.system_identifier if header else None


def check_segment_header(
    name: str, head: bytes, *, size: int | None, system_identifier: str | None, where: str
) -> WalPageHeader:
    """Refuse WAL content that is not segment `name` (or its .partial) of this database system.

    PostgreSQL itself stops recovery early ("unexpected pageaddr", "WAL file is from different database
    system") when served such a file and then promotes with the data it has: a silent loss.
    """
    wal = classify(name)
    assert wal is not None and wal.segment is not None
    header = read_page_header(head)
    if header is None:
        raise IntegrityCheckFailed(f"{where} does not start with a WAL page header: it is not the WAL file {name}")
    seg = parse_segment_name(wal.segment, wal_segment_size=header.segment_size)
    problems = []
    if header.pageaddr != seg.start_lsn or header.timeline > seg.timeline:
        problems.append(f"it holds {header.describe()}")
    if system_identifier and header.system_identifier != system_identifier:
        problems.append(f"it comes from database system {header.system_identifier}, not {system_identifier}")
    if wal.kind == "segment" and size is not None and size != header.segment_size:
        problems.append(f"it has {size} bytes, not the {header.segment_size} of a whole segment")
    if problems:
        raise IntegrityCheckFailed(f"{where} is not the WAL file {name}: {'; '.join(problems)}")
    return header


def repo_system_identifier(repo: Repository) -> str | None:
    """The system identifier this repository belongs to (set by its first backup), if any."""
    return (read_identity(repo) or {}).get("system_identifier")


def wal_push(
    wal_path: Path, *, repo: Repository, compression: str = "zstd", key_file: str | os.PathLike[str] | None = None
) -> WalPushResult:
    """Archive one WAL file: never overwrite; identical content already there is success, different is an error."""
    name = wal_path.name
    wal = classify(name)
    if not wal_path.is_file():
        raise UsageError(f"{wal_path} is not a file; archive_command must pass %p (the path of the WAL file)")
    if wal is None or wal.suffix:
        raise UsageError(f"{name} is not a WAL file name; archive_command must pass %p, not another file")
    identity = read_identity(repo)
    owner = (identity or {}).get("system_identifier")
    sysid = None
    if wal.kind in ("segment", "partial"):
        with open(wal_path, "rb") as f:
            head, size = f.read(_LONG_HEADER.size), os.fstat(f.fileno()).st_size
        sysid = segment_system_identifier(wal_path)
        if sysid and owner and sysid != owner:
            raise RepositoryError(
                f"{name} comes from database system {sysid}, but {repo.url} belongs to system {owner}; "
                "refusing to mix clusters in one archive: give this cluster its own repository"
            )
        try:  # a segment of the cluster's segment size whose first page header matches its name
            check_segment_header(name, head, size=size, system_identifier=None, where=str(wal_path))
        except IntegrityCheckFailed as e:
            raise UsageError(f"{e}; nothing was archived: archive_command must pass %p, the server's own file") from e
    sealing = new_sealing(key_file)
    enforce(repo, sealing.meta if sealing else None, what=f"archive {name}", identity=identity)
    key = f"{WAL}/{name}"
    local_sha = sha256_of(wal_path)[1]
    if repo.exists(key):
        return _already_archived(repo, key, wal_path, local_sha, key_file=key_file)
    envelope = {"name": name, "system_identifier": sysid, "pushed_at": datetime.now(UTC).isoformat()}
    if wal.kind in ("history", "backup"):
        compression = "none"  # small text files: keep them readable
    try:
        stored = store_object(
            repo, key, wal_path, codec=compression, sealing=sealing, scope="wal", envelope=envelope,
            sha256=local_sha,
        )  # fmt: skip
    except RepositoryError:
        # "already exists" from a conditional put: a concurrent push, or our own first attempt whose answer
        # was lost before the client retried. The same content stored there is success.
        if not repo.exists(key):
            raise
        return _already_archived(repo, key, wal_path, local_sha, key_file=key_file)
    return WalPushResult(name, stored.plain_size, stored.plain_sha256, already_archived=False)


def _already_archived(
    repo: Repository, key: str, wal_path: Path, local_sha: str, *, key_file: str | os.PathLike[str] | None
) -> WalPushResult:
    """Success if key holds this file's content (and still reads back intact), else a loud error."""
    name = wal_path.name
    header, raw = read_envelope(repo, key)
    raw.close()
    if header["sha256"] != local_sha:
        raise RepositoryError(
            f"{name} is already archived in {repo.url} with DIFFERENT content (sha256 {header['sha256'][:12]}…, "
            f"this file {local_sha[:12]}…); refusing to overwrite it. Two clusters may share one archive, "
            "or the server was restored without a new timeline: give each cluster its own repository"
        )
    drain(open_envelope(repo, key, key_file=key_file))  # the stored copy must still be intact
    return WalPushResult(name, wal_path.stat().st_size, local_sha, already_archived=True)


def wal_fetch(
    name: str,
    dest: Path,
    *,
    repo: Repository,
    key_file: str | os.PathLike[str] | None = None,
    system_identifier: str | None | type[LookUp] = LookUp,
) -> int:
    """Restore one WAL file to dest atomically and verified; WalMissing when the archive does not have it.

    The object must be what was asked for: its envelope's name, its system identifier and, for segments,
    the page header of its content must match the request and the repository's identity (IntegrityCheckFailed).
    system_identifier: the repository's, when the caller has read it already (None: the repository has none).
    """
    wal = classify(name)
    if wal is None:
        raise UsageError(f"{name!r} is not a WAL file name; restore_command must pass %f")
    key = f"{WAL}/{name}"
    owner = repo_system_identifier(repo) if system_identifier is LookUp else system_identifier
    where = f"{key} in {repo.url}"
    try:
        header, raw = read_envelope(repo, key)
    except DocumentMissing as e:
        raise WalMissing(f"{name} is not in {repo.url}") from e
    _check_envelope(name, header, owner=owner, where=where, raw=raw)
    try:
        # no fsync: PostgreSQL reads the restored file at once and makes its own copy durable
        size = copy_to_file(unseal_envelope(repo, key, header, raw, key_file=key_file), dest, durable=False)
        if wal.kind in ("segment", "partial"):
            with open(dest, "rb") as f:
                head = f.read(_LONG_HEADER.size)
            check_segment_header(name, head, size=size, system_identifier=owner, where=where)
    except OSError as e:
        raise RepositoryError(f"could not write {dest}: {e.strerror}; check space and permissions") from e
    except IntegrityCheckFailed as e:
        dest.unlink(missing_ok=True)
        raise IntegrityCheckFailed(f"{e}; recovery must not continue past a damaged or misplaced WAL file") from e
    return size


def _check_envelope(name: str, header: dict[str, Any], *, owner: str | None, where: str, raw: BinaryIO) -> None:
    """Refuse an object whose envelope records another WAL name or another database system."""
    recorded = header.get("name")
    sysid = clean_system_identifier(header.get("system_identifier"))
    problem = None
    if recorded is not None and recorded != name:
        problem = f"it was archived as {recorded}"
    elif owner and sysid and sysid != owner:
        problem = f"it was archived from database system {sysid}, but the repository belongs to {owner}"
    if problem:
        raw.close()
        raise IntegrityCheckFailed(
            f"{where} is not the WAL file {name}: {problem}; recovery must not continue past a misplaced WAL "
            "file: put the right file under this name (or remove the wrong one) and restore again"
        )


@dataclass(frozen=True)
class WalReport:
    """Archived WAL per timeline, gaps as ranges, and segments a backup needs but the archive lacks."""

    timelines: dict[int, tuple[str, str]] = field(default_factory=dict)
    gaps: dict[int, list[WalGap]] = field(default_factory=dict)
    missing_for_backups: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when there are no gaps and every backup's own WAL is present."""
        return not self.gaps and not any(self.missing_for_backups.values())

    def lines(self) -> list[str]:
        """Human-readable findings, one per line."""
        out = [f"timeline {tl}: {first} .. {last}" for tl, (first, last) in sorted(self.timelines.items())]
        for tl, gaps in sorted(self.gaps.items()):
            out += [f"GAP on timeline {tl}: {g.first} .. {g.last} ({g.count} segment(s) missing)" for g in gaps]
        for backup_id, names in sorted(self.missing_for_backups.items()):
            if names:
                out.append(f"backup {backup_id} needs WAL not in the archive: {names[0]} .. {names[-1]}")
        return out


def wal_names(repo: Repository) -> list[str]:
    """Names of archived WAL files (without the wal/ prefix)."""
    return [k.rsplit("/", 1)[-1] for k in repo.list(f"{WAL}/") if classify(k.rsplit("/", 1)[-1])]


def check_continuity(
    repo: Repository,
    *,
    wal_segment_size: int = 16 * 1024 * 1024,
    names: list[str] | None = None,
    records: list[BackupRecord] | None = None,
) -> WalReport:
    """Find WAL gaps per timeline and check each good physical backup's start..stop segments are archived.

    names / records: the repository's WAL names and catalog records when the caller has already read them.
    """
    names = wal_names(repo) if names is None else names
    present = set(names)
    timelines: dict[int, tuple[str, str]] = {}
    for name in sorted(names):
        wal = classify(name)
        if wal and wal.kind == "segment":
            first, _ = timelines.get(wal.timeline, (name, name))
            timelines[wal.timeline] = (first, name)
    missing: dict[str, list[str]] = {}
    for record in repo.list_backups() if records is None else records:
        if record.is_good and record.kind in ("full", "incremental") and record.start_lsn and record.stop_lsn:
            size = int(record.options.get("wal_segment_size", wal_segment_size))
            start, stop = parse_lsn(record.start_lsn), parse_lsn(record.stop_lsn)
            need = segments_between(record.timeline or 1, start, max(start, stop - 1), wal_segment_size=size)
            missing[record.id] = [n for n in need if n not in present]
    return WalReport(timelines, find_gaps(names, wal_segment_size=wal_segment_size), missing)
