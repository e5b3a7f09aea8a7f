"""`backup-tools copy`: replicate backups and their WAL to another repository (DR region, 3-2-1), verified there.

Objects are copied byte for byte (ciphertext stays ciphertext: no key is needed) and every one is read
back from the destination and hashed. Order: identity, each backup's objects (parents of incrementals
first), the WAL from the oldest copied backup's start through the newest archived WAL, then the
catalog records (parents first) LAST, so a half-copied backup is never listed at the destination.
Objects already at the destination with the right sha256 are skipped: a killed copy resumes.
The copy lag (source backup stop / newest WAL archived -> copy complete) is the regional-outage RPO;
it is stored in each copied catalog's options["copy"] and in copy-status.json at the destination.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from backup_tools.catalog import BACKUPS, CATALOG_NAME, IDENTITY_KEY, WAL, BackupRecord
from backup_tools.errors import (
    BackupNotFound,
    BackupToolsError,
    EncryptionKeyError,
    IntegrityCheckFailed,
    RepositoryError,
    UsageError,
    VersionMismatch,
)
from backup_tools.repo.base import Repository
from backup_tools.repo.objects import read_envelope
from backup_tools.repo.policy import FIELD as POLICY
from backup_tools.repo.policy import read_identity
from backup_tools.repo.s3.placement import Placement, is_archived
from backup_tools.restore.pitr import backup_chain
from backup_tools.streams import sha256_of
from backup_tools.wal.archive import wal_names
from backup_tools.wal.lsn import classify, parse_lsn, segment_name

logger = logging.getLogger(__name__)

STATUS_KEY = "copy-status.json"
Log = Callable[[str], Any]


@dataclass(frozen=True)
class CopyResult:
    """What a copy did, and its lag: the data a regional outage at the source would lose."""

    source: str
    destination: str
    backups: tuple[str, ...]
    copied: int
    skipped: int
    repaired: int
    bytes_copied: int
    wal_copied: int
    wal_skipped: int
    newest_wal: str | None
    completed_at: datetime
    seconds: float
    backup_lag_seconds: dict[str, float] = field(default_factory=dict)
    wal_lag_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self) | {"completed_at": self.completed_at.isoformat()}


@dataclass
class _Tally:
    copied: int = 0
    skipped: int = 0
    repaired: int = 0
    bytes: int = 0


def _dest_sha256(dst: Repository, key: str) -> str | None:
    """Read an object back from the destination and hash it (None when it is not there).

    An object archived at the destination (copy --storage-class GLACIER) cannot be read back: its sha256
    is the one hashed from the bytes streamed to it, recorded with the object.
    """
    if not dst.exists(key):
        return None
    if dst.placement is not None and dst.placement.archived and is_archived(dst, key):
        return dst.stored_sha256(key)  # type: ignore[attr-defined]
    with dst.open_raw(key) as f:
        return sha256_of(f)[1]


def copy_object(src: Repository, dst: Repository, key: str, *, sha256: str | None, size: int | None,
                tally: _Tally, log: Log) -> str:  # fmt: skip
    """Copy one object unless the destination already holds it; return its sha256, verified at the destination."""
    expected = sha256
    found = _dest_sha256(dst, key)
    if found is not None and expected is None:  # no catalog checksum (WAL, extras): the source's bytes decide
        try:
            with src.open_read(key) as f:
                size, expected = sha256_of(f)
        except RepositoryError as e:
            raise _missing(src, key, e) from e
    if found is not None and found == expected:
        tally.skipped += 1
        return found
    if found is not None:
        log(f"### {key} differs at {dst.url} (sha256 {found[:12]}…, source {expected[:12]}…): copying it again")  # type: ignore[index]
        tally.repaired += 1
    else:
        log(f"### Copying {key}")
    try:
        with src.open_read(key, sha256=expected, size=size) as stream:
            info = dst.put_stream(key, stream, overwrite=found is not None)
    except IntegrityCheckFailed as e:
        raise IntegrityCheckFailed(f"source object damaged, nothing copied: {e}") from e
    except RepositoryError as e:
        if not src.exists(key):
            raise _missing(src, key, e) from e
        raise RepositoryError(f"copy to {dst.url} failed: {e}") from e
    expected = expected or info.sha256  # what was read from the source (verified against its checksum if any)
    got = _dest_sha256(dst, key)
    if got != expected:
        raise IntegrityCheckFailed(
            f"{key} at {dst.url} reads back with sha256 {(got or 'nothing')[:16]}…, the source has {expected[:16]}… "
            "(checksum mismatch at the destination); check the destination storage and run the copy again"
        )
    tally.copied += 1
    tally.bytes += info.size
    return expected


def _missing(src: Repository, key: str, e: Exception) -> BackupToolsError:
    return RepositoryError(
        f"{key} is missing from the source {src.url} ({e}); the source backup is incomplete: run "
        f"`backup-tools verify --repo {src.url}` and take a new backup"
    )


def select_backups(src: Repository, which: str) -> list[BackupRecord]:
    """The backups to copy ('all' good ones, 'latest', or one id), each with its incremental chain, parents first."""
    records = src.list_backups()
    good = [r for r in records if r.is_good]
    if which == "all":
        chosen = good
    elif which == "latest":
        if not good:
            raise BackupNotFound(f"no finished backup in {src.url} to copy; take one with `backup-tools backup`")
        chosen = good[-1:]
    else:
        record = src.read_catalog(which)
        if not record.is_good:
            raise BackupNotFound(f"backup {which} in {src.url} is {record.status}, not DONE; copy a finished backup")
        chosen = [record]
    out: dict[str, BackupRecord] = {}
    for record in chosen:
        for member in backup_chain(src, record) if record.kind == "incremental" else [record]:
            out.setdefault(member.id, member)
    return sorted(out.values(), key=lambda r: (r.start_time, r.id))


def _check_identity(src: Repository, dst: Repository, tally: _Tally, log: Log) -> None:
    mine = read_identity(src)
    if mine is None:
        return
    theirs = read_identity(dst)
    if theirs is not None:
        if theirs.get("system_identifier") != mine.get("system_identifier"):
            raise UsageError(
                f"{dst.url} holds backups of database system {theirs.get('system_identifier')}, {src.url} of "
                f"system {mine.get('system_identifier')}; copy into a separate repository per cluster"
            )
        if str(theirs.get("pg_major")) != str(mine.get("pg_major")):
            raise VersionMismatch(
                f"{dst.url} holds PostgreSQL {theirs.get('pg_major')} backups, {src.url} PostgreSQL "
                f"{mine.get('pg_major')} ones (a major upgrade keeps the system identifier); copy into a new "
                "repository for the new major version"
            )
        ours, dest = mine.get(POLICY), theirs.get(POLICY)
        if ours and dest and ours != dest:
            raise EncryptionKeyError(
                f"{dst.url}'s encryption policy is {dest}, {src.url}'s is {ours}: the copied objects would break it; "
                "copy into a repository with the same policy (or rekey one of them first)"
            )
        return
    copy_object(src, dst, IDENTITY_KEY, sha256=None, size=None, tally=tally, log=log)


def wal_to_copy(src: Repository, records: list[BackupRecord], *, all_wal: bool) -> list[str]:
    """WAL names from the oldest backup's start segment through the newest (all of it with all_wal), histories too."""
    names = wal_names(src)
    starts = [
        segment_name(r.timeline or 1, parse_lsn(r.start_lsn), wal_segment_size=int(r.options.get("wal_segment_size",
                     16 << 20)))
        for r in records if r.start_lsn and r.kind != "logical"
    ]  # fmt: skip
    if all_wal or not starts:
        return names if all_wal else []
    first = min(starts)
    first_tli = int(first[:8], 16)
    out = []
    for name in names:
        wal = classify(name)
        if wal is None:
            continue
        if wal.kind == "history" or wal.timeline > first_tli or (wal.segment or name[:24]) >= first:
            out.append(name)
    return out


def _pushed_at(src: Repository, name: str) -> datetime | None:
    """When a WAL file was archived, from its self-describing header."""
    try:
        header, raw = read_envelope(src, f"{WAL}/{name}")
        raw.close()
        return datetime.fromisoformat(header["pushed_at"]) if header.get("pushed_at") else None
    except (BackupToolsError, ValueError):
        return None


def copy_backups(src: Repository, dst: Repository, *, backup: str = "latest", all_wal: bool = False,
                 placement: Placement | None = None, log: Log = logger.info) -> CopyResult:  # fmt: skip
    """Copy backups (with their chains) and the WAL they need to dst, verify every object there, catalogs last.

    placement: storage class / Object Lock of the copied backups' objects at dst (placement.placement_for).
    """
    if src.url == dst.url:
        raise UsageError(f"--repo and --to-repo are the same repository ({src.url}); copy to another one")
    dst = dst.placed(placement)
    began = datetime.now(UTC)
    records = select_backups(src, backup)
    try:
        dst.list(f"{BACKUPS}/")  # unreachable / missing destination fails here, before anything is written
    except RepositoryError as e:
        raise RepositoryError(f"destination unreachable: {e}") from e
    log(f"### Copying {len(records)} backup(s) from {src.url} to {dst.url}")
    tally, wal_tally = _Tally(), _Tally()
    with dst.lock("copy"):
        _check_identity(src, dst, tally, log)
        for record in records:
            prefix = f"{BACKUPS}/{record.id}/"
            listed = {f.name: f for f in record.files}
            for entry in record.files:
                copy_object(src, dst, prefix + entry.name, sha256=entry.sha256, size=entry.size, tally=tally, log=log)
            for key in src.list(prefix):  # anything else stored with the backup (not the catalog: written last)
                name = key[len(prefix) :]
                if name != CATALOG_NAME and name not in listed and not name.startswith("."):
                    copy_object(src, dst, key, sha256=None, size=None, tally=tally, log=log)
        wal = wal_to_copy(src, records, all_wal=all_wal)
        for name in wal:
            copy_object(src, dst, f"{WAL}/{name}", sha256=None, size=None, tally=wal_tally, log=log)
        completed = datetime.now(UTC)
        segments = [n for n in wal if (w := classify(n)) and w.kind in ("segment", "partial")]
        newest = max(segments, key=lambda n: n[:24]) if segments else None
        pushed = _pushed_at(src, newest) if newest else None
        wal_lag = (completed - pushed).total_seconds() if pushed else None
        lags: dict[str, float] = {}
        for record in records:
            lags[record.id] = (completed - (record.stop_time or record.start_time)).total_seconds()
            _write_catalog(src, dst, record, completed=completed, lag=lags[record.id], newest_wal=newest,
                           wal_lag=wal_lag, log=log)  # fmt: skip
    result = CopyResult(
        source=src.url, destination=dst.url, backups=tuple(r.id for r in records), copied=tally.copied,
        skipped=tally.skipped, repaired=tally.repaired + wal_tally.repaired, bytes_copied=tally.bytes + wal_tally.bytes,
        wal_copied=wal_tally.copied, wal_skipped=wal_tally.skipped, newest_wal=newest, completed_at=completed,
        seconds=(datetime.now(UTC) - began).total_seconds(), backup_lag_seconds=lags, wal_lag_seconds=wal_lag,
    )  # fmt: skip
    changed = tally.copied + tally.repaired + wal_tally.copied + wal_tally.repaired
    if changed or not _status_matches(dst, result):  # a copy that changed nothing keeps the earlier status and lag
        dst.put_bytes(STATUS_KEY, (json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n").encode(),
                      overwrite=True)  # fmt: skip
    log(
        f"### Copy done: {result.copied} object(s) and {result.wal_copied} WAL file(s) copied, "
        f"{result.skipped + result.wal_skipped} already there, newest WAL {newest or '-'}"
        + (f" ({wal_lag:.0f} s old)" if wal_lag is not None else "")
    )
    return result


def _status_matches(dst: Repository, result: CopyResult) -> bool:
    """Whether the destination's copy-status.json already names the same backups and newest WAL."""
    try:
        doc = json.loads(dst.get_bytes(STATUS_KEY))
    except (BackupToolsError, ValueError):
        return False
    return doc.get("backups") == list(result.backups) and doc.get("newest_wal") == result.newest_wal


def _write_catalog(src: Repository, dst: Repository, record: BackupRecord, *, completed: datetime, lag: float,
                   newest_wal: str | None, wal_lag: float | None, log: Log) -> None:  # fmt: skip
    """Write the destination's catalog record (last); keep an earlier copy's lag when nothing changed."""
    current = src.read_catalog(record.id)  # re-read: verify may have updated it meanwhile
    if not current.is_good:
        raise RepositoryError(
            f"backup {record.id} became {current.status} in {src.url} while it was being copied (pruned?); "
            "its objects at the destination are not listed; run the copy again"
        )
    if dst.exists(f"{BACKUPS}/{record.id}/{CATALOG_NAME}"):
        previous = dst.read_catalog(record.id)
        if previous.is_good and "copy" in previous.options and previous.files == current.files:
            return
    info = {"source": src.url, "copied_at": completed.isoformat(), "lag_seconds": round(lag, 3),
            "newest_wal": newest_wal, "wal_lag_seconds": None if wal_lag is None else round(wal_lag, 3)}  # fmt: skip
    log(f"### Listing {record.id} at {dst.url} (copy lag {lag:.0f} s)")
    options = {k: v for k, v in current.options.items() if k not in ("storage_class", "lock_until")}  # dst's own
    dst.write_catalog(current.with_changes(options={**options, "copy": info}))
