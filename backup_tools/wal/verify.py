"""Archived WAL, read back: `verify --wal` reads every object (envelope, sha256, authentication, name against
page header) and reports gaps per timeline; `check` lists the archive's names and sizes every time (cheap).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backup_tools.catalog import WAL
from backup_tools.errors import BackupToolsError, IntegrityCheckFailed
from backup_tools.repo.base import Repository
from backup_tools.repo.objects import ENVELOPE_MAGIC, drain, open_envelope, read_envelope
from backup_tools.repo.policy import PLAINTEXT, policy_of, read_identity
from backup_tools.wal.archive import check_segment_header
from backup_tools.wal.lsn import classify, find_gaps

logger = logging.getLogger(__name__)

Log = Callable[[str], Any]
MIN_OBJECT = len(ENVELOPE_MAGIC) + 2  # magic, "{}" : anything shorter cannot be a WAL object


@dataclass(frozen=True)
class WalVerifyResult:
    """Objects read, problems per object, gaps per timeline (as text), and the timelines' first..last segment."""

    checked: int
    problems: dict[str, str] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)
    timelines: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every object read back intact and no timeline has a gap."""
        return not self.problems and not self.gaps


def listing_problems(repo: Repository) -> tuple[list[str], dict[str, str]]:
    """The cheap part (one listing): (archived WAL names, {key: problem}) for foreign names and too-small objects."""
    sizes = repo.list_sizes(f"{WAL}/")
    names, problems = [], {}
    for key, size in sorted(sizes.items()):
        name = key.rsplit("/", 1)[-1]
        if name.startswith("."):
            continue  # a temp file of a write in progress
        if classify(name) is None:
            problems[key] = "not a WAL file name (copied in by hand or by another tool?)"
        elif size < MIN_OBJECT:
            problems[key] = f"{size} bytes: too small to be an archived WAL file (truncated)"
        else:
            names.append(name)
    return names, problems


def verify_wal(repo: Repository, *, key_file: str | os.PathLike[str] | None = None, log: Log = logger.info
               ) -> WalVerifyResult:  # fmt: skip
    """Read every archived WAL object to its end and check it against its header, its name and the repository."""
    names, problems = listing_problems(repo)
    identity = read_identity(repo) or {}
    sysid, policy = identity.get("system_identifier"), identity.get("encryption")
    log(f"### Reading {len(names)} archived WAL file(s) in {repo.url}")
    for name in names:
        key = f"{WAL}/{name}"
        try:
            header, raw = read_envelope(repo, key)
            raw.close()
            problem = _header_problem(name, header, sysid=sysid, policy=policy)
            if problem is None:
                problem = _content_problem(repo, key, name, key_file=key_file)
        except BackupToolsError as e:
            problem = str(e)
        if problem:
            problems[key] = problem
    segments = [n for n in names if (w := classify(n)) is not None and w.kind == "segment"]
    gaps = [f"timeline {tl}: {g.first} .. {g.last} ({g.count} segment(s) missing)"
            for tl, found in sorted(find_gaps(segments).items()) for g in found]  # fmt: skip
    timelines: dict[int, tuple[str, str]] = {}
    for name in sorted(segments):
        tl = int(name[:8], 16)
        timelines[tl] = (timelines.get(tl, (name, name))[0], name)
    return WalVerifyResult(len(names), problems, gaps, timelines)


def _header_problem(name: str, header: dict[str, Any], *, sysid: str | None, policy: str | None) -> str | None:
    """What the envelope header says that contradicts the object's name or the repository identity."""
    if header.get("name") not in (None, name):
        return f"stored under {name} but its header says it is {header.get('name')} (misnamed copy)"
    if sysid and header.get("system_identifier") not in (None, sysid):
        return f"from database system {header.get('system_identifier')}, the repository belongs to {sysid}"
    found = policy_of(header.get("encryption"))
    if policy and found != policy:
        what = "unencrypted" if found == PLAINTEXT else f"encrypted with key id {found}"
        return f"{what}, against the repository's encryption policy ({policy})"
    return None


def _content_problem(repo: Repository, key: str, name: str, *, key_file: str | os.PathLike[str] | None) -> str | None:
    """Decrypt, decompress and hash the whole object; for segments, check the first page header against the name."""
    with open_envelope(repo, key, key_file=key_file) as stream:
        head = stream.read(64)
        size = len(head)
        while chunk := stream.read(1 << 20):
            size += len(chunk)
        drain(stream)  # EOF: sha256 and size against the header
    wal = classify(name)
    if wal is not None and wal.kind in ("segment", "partial"):
        try:
            check_segment_header(name, head, size=size, system_identifier=None, where=key)
        except IntegrityCheckFailed as e:
            return str(e)
    return None
