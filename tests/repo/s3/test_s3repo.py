"""S3Repository against a real S3 API (moto over HTTP), with faults injected by a local proxy."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from backup_tools.catalog import BackupRecord
from backup_tools.errors import BackupNotFound, IntegrityCheckFailed, RepositoryError, RestorePending
from backup_tools.repo import open_repository
from backup_tools.repo.s3.repository import MiB, S3Options, S3Repository, retain_for
from fixtures.faultproxy import FaultProxy, closed_port_url, fault_proxy
from fixtures.s3 import S3Credentials, S3Service

pytestmark = pytest.mark.integration
SMALL_PARTS = {"part_size": 5 * MiB}  # moto (like S3) refuses parts under 5 MiB except the last


class Trickle(io.RawIOBase):
    """A pipe-like source: short reads of at most `step` bytes, optionally failing after `fail_after` bytes."""

    def __init__(self, data: bytes, *, step: int = 65536, fail_after: int | None = None):
        self._data, self._pos, self._step, self._fail_after = data, 0, step, fail_after

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._fail_after is not None and self._pos >= self._fail_after:
            raise OSError("pg_dump died")
        n = self._step if n < 0 else min(n, self._step)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


def payload(size: int) -> bytes:
    """Incompressible-looking deterministic bytes."""
    block = hashlib.sha256(str(size).encode()).digest() * 2048
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def repo(s3: S3Service, s3_prefix: str) -> S3Repository:
    """A repository under a fresh prefix of the primary bucket."""
    return s3.repository(s3.primary_region, s3_prefix, **SMALL_PARTS)


@pytest.fixture
def proxy(s3: S3Service) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the session's S3 endpoint."""
    with fault_proxy(s3.endpoint) as p:
        yield p


def test_small_put_records_sha256_as_metadata(repo: S3Repository, s3: S3Service) -> None:
    info = repo.put_bytes("wal/000000010000000000000001", b"wal bytes")
    assert info.sha256 == hashlib.sha256(b"wal bytes").hexdigest() and info.size == 9
    head = s3.client().head_object(Bucket=repo.bucket, Key=f"{repo.prefix}/wal/000000010000000000000001")
    assert head["Metadata"]["sha256"] == info.sha256
    assert repo.get_bytes("wal/000000010000000000000001", sha256=info.sha256) == b"wal bytes"
    assert repo.stat("wal/000000010000000000000001") == 9


def test_multipart_streams_from_a_pipe_and_verifies(repo: S3Repository, s3: S3Service) -> None:
    data = payload(12 * MiB + 123)
    info = repo.put_stream("backups/b1/base.tar", Trickle(data))
    assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    head = s3.client().head_object(Bucket=repo.bucket, Key=f"{repo.prefix}/backups/b1/base.tar")
    assert head["ETag"].strip('"').endswith("-3")  # three 5 MiB parts: really multipart
    assert repo.stored_sha256("backups/b1/base.tar") == info.sha256
    with repo.open_read("backups/b1/base.tar", sha256=info.sha256, size=info.size) as f:
        assert hashlib.sha256(f.read()).hexdigest() == info.sha256


def test_list_with_etags_gives_keys_sizes_and_etags(repo: S3Repository, s3: S3Service) -> None:
    repo.put_bytes("docs/b", b"bee")
    repo.put_bytes("docs/a", b"a")
    repo.put_bytes("other", b"x")
    etag = s3.client().head_object(Bucket=repo.bucket, Key=f"{repo.prefix}/docs/b")["ETag"].strip('"')
    listed = repo.list_with_etags("docs/")
    assert [(o.key, o.size) for o in listed] == [("docs/a", 1), ("docs/b", 3)] and listed[1].etag == etag


def test_catalog_reads_take_one_request_each(s3: S3Service, s3_prefix: str, proxy: FaultProxy) -> None:
    repo = s3.repository(s3.primary_region, s3_prefix, endpoint_url=proxy.url)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [f"b{i}" for i in range(5)]
    for i, backup_id in enumerate(ids):
        repo.write_catalog(BackupRecord(backup_id, "full", "DONE", start + timedelta(hours=i)))
    repo.put_bytes("backups/b0/base.tar", payload(1000))
    proxy.clear()
    assert [r.id for r in repo.list_backups()] == ids
    assert (proxy.count(), proxy.count("GET", "catalog.json")) == (1 + len(ids), len(ids))  # one LIST, one GET each
    proxy.clear()
    assert repo.read_catalog("b3").id == "b3"
    with pytest.raises(BackupNotFound, match="no backup 'nope'"):
        repo.read_catalog("nope")
    assert proxy.count() == 2
    proxy.clear()
    assert repo.get_bytes("backups/b0/base.tar") == payload(1000)  # data objects: still checked against stored sha256
    assert proxy.count("HEAD") == 1


@pytest.mark.parametrize("size", [100, 7 * MiB], ids=["single-put", "multipart"])
def test_no_overwrite_is_conditional(repo: S3Repository, size: int) -> None:
    repo.put_bytes("k", payload(size))
    with pytest.raises(RepositoryError, match="already exists.*refusing to overwrite"):
        repo.put_bytes("k", b"other")
    with pytest.raises(RepositoryError, match="already exists"):
        repo.put_stream("k", io.BytesIO(payload(size + 1)))
    assert repo.get_bytes("k") == payload(size)
    repo.put_bytes("k", b"replaced", overwrite=True)
    assert repo.get_bytes("k") == b"replaced"


def test_interrupted_multipart_leaves_nothing(repo: S3Repository, s3: S3Service) -> None:
    with pytest.raises(OSError, match="pg_dump died"):
        repo.put_stream("backups/b2/base.tar", Trickle(payload(20 * MiB), fail_after=11 * MiB))
    client = s3.client()
    assert repo.stat("backups/b2/base.tar") is None
    uploads = client.list_multipart_uploads(Bucket=repo.bucket, Prefix=repo.prefix).get("Uploads", [])
    assert uploads == []


def test_multipart_whose_parts_keep_failing_is_aborted(s3: S3Service, s3_prefix: str, proxy: FaultProxy) -> None:
    repo = s3.repository(s3.primary_region, s3_prefix, endpoint_url=proxy.url, **SMALL_PARTS)
    proxy.fail(1000, status=500, method="PUT", path="partNumber=2")
    with pytest.raises(RepositoryError, match="kept failing .500.*after 3 attempts"):
        repo.put_stream("backups/b6/base.tar", io.BytesIO(payload(12 * MiB)))
    assert proxy.count("PUT", "partNumber=2") == 3
    assert proxy.count("DELETE", "uploadId=") == 1  # AbortMultipartUpload
    assert s3.client().list_multipart_uploads(Bucket=repo.bucket, Prefix=s3_prefix).get("Uploads", []) == []
    assert repo.stat("backups/b6/base.tar") is None


def test_list_delete_and_catalog_paths(repo: S3Repository) -> None:
    for key in ("wal/b", "wal/a", "backups/x/data"):
        repo.put_bytes(key, key.encode())
    assert repo.list("wal/") == ["wal/a", "wal/b"]
    assert repo.list("") == ["backups/x/data", "wal/a", "wal/b"]
    repo.delete("wal/a")
    repo.delete("wal/never-existed")
    assert repo.list("wal/") == ["wal/b"] and not repo.exists("wal/a")


def test_open_repository_reads_the_endpoint_from_the_environment(
    s3: S3Service, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    repo = open_repository(s3.repo_url(s3.dr_region, s3_prefix))
    assert isinstance(repo, S3Repository) and repo.endpoint == s3.endpoint
    repo.put_bytes("x", b"dr copy")
    assert s3.client(s3.dr_region).get_object(Bucket=s3.dr_bucket, Key=f"{s3_prefix}/x")["Body"].read() == b"dr copy"


def test_bit_flip_is_an_integrity_error_naming_the_key(repo: S3Repository, s3: S3Service) -> None:
    data = payload(4096)
    info = repo.put_bytes("backups/b3/base.tar", data)
    flipped = bytearray(data)
    flipped[1000] ^= 0x01
    full = f"{repo.prefix}/backups/b3/base.tar"  # silent corruption: same metadata, one bit differs
    s3.client().put_object(Bucket=repo.bucket, Key=full, Body=bytes(flipped), Metadata={"sha256": info.sha256})
    with pytest.raises(IntegrityCheckFailed, match="backups/b3/base.tar: sha256"):
        repo.get_bytes("backups/b3/base.tar")  # checked against the stored sha256
    with pytest.raises(IntegrityCheckFailed, match="backups/b3/base.tar"):
        repo.get_bytes("backups/b3/base.tar", sha256=info.sha256)  # and against the catalog's


def test_truncated_object_is_an_integrity_error(repo: S3Repository, s3: S3Service) -> None:
    info = repo.put_bytes("wal/seg", payload(8192))
    s3.client().put_object(Bucket=repo.bucket, Key=f"{repo.prefix}/wal/seg", Body=payload(8192)[:5000])
    with (
        pytest.raises(IntegrityCheckFailed, match="wal/seg: read 5000 bytes, catalog says 8192"),
        repo.open_read("wal/seg", sha256=info.sha256, size=info.size) as f,
    ):
        f.read()


def test_missing_key_and_missing_bucket(s3: S3Service, repo: S3Repository) -> None:
    assert repo.stat("nope") is None
    with pytest.raises(RepositoryError, match="nope is missing from s3://"):
        repo.get_bytes("nope")
    gone = S3Repository("pgdrill-no-such-bucket", "p", S3Options(endpoint_url=s3.endpoint, credentials=_pair(s3)))
    for action in (lambda: gone.stat("k"), lambda: gone.put_bytes("k", b"x"), lambda: gone.list("")):
        with pytest.raises(RepositoryError, match="bucket pgdrill-no-such-bucket does not exist.*create it"):
            action()


def test_wrong_credentials_are_named_without_the_secret(
    s3: S3Service, s3_prefix: str, s3_iam_auth: S3Credentials
) -> None:
    good = s3.repository(s3.primary_region, s3_prefix, credentials=(s3_iam_auth.access_key_id, "x" * 40))
    with pytest.raises(RepositoryError, match="rejected the credentials.*AWS_SECRET_ACCESS_KEY") as err:
        good.put_bytes("k", b"x")
    assert "x" * 40 not in str(err.value)
    ok = s3.repository(
        s3.primary_region, s3_prefix, credentials=(s3_iam_auth.access_key_id, s3_iam_auth.secret_access_key)
    )
    assert ok.put_bytes("k", b"x").size == 1


@pytest.mark.parametrize("how", ["closed-port", "server-stopped"])
def test_unreachable_endpoint_fails_fast(s3: S3Service, how: str) -> None:
    if how == "closed-port":
        url = closed_port_url()
    else:
        proxy = FaultProxy(s3.endpoint).start()
        url = proxy.url
        proxy.stop()
    repo = S3Repository(s3.primary_bucket, "p", S3Options(endpoint_url=url, credentials=_pair(s3)))
    started = time.monotonic()
    with pytest.raises(RepositoryError, match=f"could not connect after 3 attempts.*{url}.*AWS_ENDPOINT_URL"):
        repo.put_bytes("k", b"x")
    assert time.monotonic() - started < 10


def test_500s_are_retried_then_reported(s3: S3Service, s3_prefix: str, proxy: FaultProxy) -> None:
    repo = s3.repository(s3.primary_region, s3_prefix, endpoint_url=proxy.url)
    proxy.fail(2, status=503, method="PUT")
    assert repo.put_bytes("survives", b"ok").size == 2  # two 503s, third attempt lands
    assert proxy.count("PUT", "survives") == 3
    proxy.fail(100, status=500, method="PUT")
    with pytest.raises(RepositoryError, match="kept failing .500.*after 3 attempts.*retry later"):
        repo.put_bytes("doomed", b"x")
    assert proxy.count("PUT", "doomed") == 3


def test_dropped_connections_are_retried_then_reported(s3: S3Service, s3_prefix: str, proxy: FaultProxy) -> None:
    repo = s3.repository(s3.primary_region, s3_prefix, endpoint_url=proxy.url)
    proxy.drop(2, method="PUT")
    assert repo.put_bytes("survives", b"ok").size == 2
    proxy.drop(100, method="PUT")
    with pytest.raises(RepositoryError, match="closed the connection without answering, 3 attempts"):
        repo.put_bytes("doomed", b"x")
    assert proxy.count("PUT", "doomed") == 3


def test_slow_endpoint_times_out(s3: S3Service, s3_prefix: str, proxy: FaultProxy) -> None:
    repo = s3.repository(s3.primary_region, s3_prefix, endpoint_url=proxy.url, read_timeout=0.5, attempts=2)
    proxy.hang(10, seconds=3, method="HEAD")
    started = time.monotonic()
    with pytest.raises(RepositoryError, match="no answer within 0.5s, 2 attempts"):
        repo.stat("k")
    assert time.monotonic() - started < 3


def test_download_resumes_after_a_dropped_connection(s3: S3Service, s3_prefix: str, proxy: FaultProxy) -> None:
    repo = s3.repository(s3.primary_region, s3_prefix, endpoint_url=proxy.url)
    data = payload(300_000)
    info = repo.put_bytes("backups/b4/base.tar", data)
    proxy.truncate(1, keep_bytes=100_000, method="GET", path="base.tar")
    assert repo.get_bytes("backups/b4/base.tar", sha256=info.sha256) == data
    assert proxy.count("GET", "base.tar") == 2  # one cut short, one ranged resume
    proxy.truncate(10, keep_bytes=10, method="GET", path="base.tar")
    with pytest.raises(RepositoryError, match="broke off at byte"):
        repo.get_bytes("backups/b4/base.tar", sha256=info.sha256)


def test_archived_object_is_restored_before_reading(s3: S3Service, s3_prefix: str, s3_restore_delay) -> None:  # noqa: ANN001
    s3_restore_delay(2)  # a restore reported in progress for 2 s (moto's restores are otherwise instant)
    repo = s3.repository(s3.primary_region, s3_prefix)
    info = repo.put_bytes("backups/monthly/base.tar", b"cold data", storage_class="DEEP_ARCHIVE")
    head = s3.client().head_object(Bucket=repo.bucket, Key=f"{s3_prefix}/backups/monthly/base.tar")
    assert head["StorageClass"] == "DEEP_ARCHIVE"
    time.sleep(2.2)  # moto counts the delay from the object's creation
    with pytest.raises(RestorePending, match="requested a Standard restore.*retry later"):
        repo.get_bytes("backups/monthly/base.tar")
    with pytest.raises(RestorePending, match="still running"):
        repo.get_bytes("backups/monthly/base.tar")
    time.sleep(2.2)
    assert repo.get_bytes("backups/monthly/base.tar", sha256=info.sha256) == b"cold data"


def test_object_lock_retention_refuses_deleting_versions(s3: S3Service, s3_lock_bucket: str) -> None:
    repo = s3.repository(s3.primary_region, "locked", bucket=s3_lock_bucket)
    repo.put_bytes("backups/b5/base.tar", b"immutable", retain_until=retain_for(timedelta(days=1)))
    client = s3.client()
    full = "locked/backups/b5/base.tar"
    head = client.head_object(Bucket=s3_lock_bucket, Key=full)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError, match="AccessDenied"):
        client.delete_object(Bucket=s3_lock_bucket, Key=full, VersionId=head["VersionId"])
    with pytest.raises(RepositoryError, match="Object Lock retention"):
        repo.purge("backups/b5/base.tar")
    assert (
        client.get_object(Bucket=s3_lock_bucket, Key=full, VersionId=head["VersionId"])["Body"].read() == b"immutable"
    )


def test_lock_is_exclusive_and_released(repo: S3Repository) -> None:
    with repo.lock():
        holder = json.loads(repo.get_bytes("locks/repo.lock"))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        started = time.monotonic()
        with pytest.raises(RepositoryError, match=f"locked by pid {os.getpid()}.*wait for it"), repo.lock():
            pass
        assert time.monotonic() - started < 5
    assert not repo.exists("locks/repo.lock")
    with repo.lock():
        assert repo.exists("locks/repo.lock")


def test_stale_locks_are_broken(s3: S3Service, s3_prefix: str) -> None:
    repo = s3.repository(s3.primary_region, s3_prefix, lock_stale_after=2.0)  # ages have 1 s resolution
    foreign = {"pid": 1, "host": "another-host", "since": 0}
    repo.put_bytes("locks/repo.lock", json.dumps(foreign).encode())
    with pytest.raises(RepositoryError, match="locked by pid 1 on another-host"), repo.lock():
        pass
    time.sleep(3.1)
    with repo.lock():
        assert json.loads(repo.get_bytes("locks/repo.lock"))["pid"] == os.getpid()
    dead = {"pid": _dead_pid(), "host": socket.gethostname(), "since": time.time()}
    repo.put_bytes("locks/repo.lock", json.dumps(dead).encode())
    with repo.lock():  # same host, process gone: stale at once
        assert json.loads(repo.get_bytes("locks/repo.lock"))["pid"] == os.getpid()


def _pair(s3: S3Service) -> tuple[str, str] | None:
    return (s3.credentials.access_key_id, s3.credentials.secret_access_key) if s3.credentials else None


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
