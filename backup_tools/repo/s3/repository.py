"""S3 repositories (s3://bucket/prefix): streaming multipart writes, verified reads, conditional puts, locks."""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, NamedTuple
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore import exceptions as bx
from botocore.config import Config
from botocore.exceptions import ClientError

from backup_tools.catalog import BACKUPS, CATALOG_NAME, BackupRecord
from backup_tools.errors import DocumentMissing, IntegrityCheckFailed, RepositoryError, RestorePending, UsageError
from backup_tools.repo.base import ObjectInfo, Repository, is_stale_lock
from backup_tools.repo.s3.deadline import CLEANUP_SECONDS, TIMEOUT_ENV, Deadline, DeadlineExceeded, timeout_seconds
from backup_tools.repo.s3.io import BOTO, HashingSource, ResumingBody, error_code, no_clobber, read_full

MiB = 1 << 20
SHA_META = "sha256"  # x-amz-meta-sha256 on single-part objects, an object tag on multipart ones
AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "403"}
CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict")
METADATA = (CATALOG_NAME, "backup_manifest")  # small objects readers need at once: never archived


class ListedObject(NamedTuple):
    """One object as S3 lists it: key (relative to the repository prefix), size and ETag (without quotes)."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class S3Options:
    """How an S3Repository reaches its endpoint and writes: connection, retries, deadlines, parts, placement."""

    endpoint_url: str | None = None  # None: AWS_ENDPOINT_URL(_S3), else AWS
    region: str | None = None
    credentials: tuple[str, str] | None = field(default=None, repr=False)  # (key id, secret); None: boto's chain
    storage_class: str = "STANDARD"
    lock_mode: str = "COMPLIANCE"
    attempts: int = 3
    connect_timeout: float = 2.0
    read_timeout: float | None = None  # None: the deadline shared by the attempts
    timeout: float | None = None  # one request with all its attempts; None: PGDRILL_S3_TIMEOUT or the default
    part_size: int = 32 * MiB  # objects up to 10,000 parts: 320 GB by default
    max_concurrency: int = 4
    lock_stale_after: float = 6 * 3600
    restore_days: int = 7
    restore_tier: str = "Standard"


class S3Repository(Repository):
    """A repository under s3://bucket/prefix on AWS or any S3-compatible endpoint (AWS_ENDPOINT_URL)."""

    def __init__(self, bucket: str, prefix: str = "", options: S3Options | None = None):
        o = options or S3Options()
        endpoint_url, connect_timeout, attempts = o.endpoint_url, o.connect_timeout, o.attempts
        if not bucket:
            raise UsageError("an S3 repository needs a bucket: s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.storage_class, self.lock_mode, self.attempts = o.storage_class, o.lock_mode, attempts
        self.timeout = timeout_seconds(o.timeout)  # one request with all its attempts (s3deadline.py)
        self.read_timeout = o.read_timeout or self.timeout / attempts
        self.lock_stale_after = o.lock_stale_after
        self.restore_days, self.restore_tier = o.restore_days, o.restore_tier
        self.transfer = TransferConfig(  # memory: about (max_concurrency + 1) * part_size; no disk staging
            multipart_threshold=o.part_size,
            multipart_chunksize=o.part_size,
            max_concurrency=o.max_concurrency,
        )
        self.transfer.max_in_memory_upload_chunks = o.max_concurrency  # s3transfer knob boto3 does not expose
        custom = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        addressing = {"addressing_style": "path" if custom else "auto"}
        config = Config(
            retries={"total_max_attempts": attempts, "mode": "standard"},
            connect_timeout=min(connect_timeout, self.read_timeout),
            read_timeout=self.read_timeout,
            s3=addressing,
        )
        short = Config(  # clean-up after a failure: one attempt, a short deadline of its own
            retries={"total_max_attempts": 1}, connect_timeout=min(connect_timeout, CLEANUP_SECONDS),
            read_timeout=CLEANUP_SECONDS, s3=addressing,
        )  # fmt: skip
        key_id, secret = o.credentials or (None, None)
        session = boto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=o.region)
        # endpoint_url=None lets botocore resolve AWS_ENDPOINT_URL(_S3) itself (botocore >= 1.31)
        self._clients: dict[bool, tuple[Any, Any]] = {}
        for cleanup, cfg, deadline in ((False, config, self.timeout), (True, short, CLEANUP_SECONDS)):
            attempt = cfg.read_timeout
            plain, new = (Deadline(deadline, attempt_seconds=attempt).install(
                session.client("s3", endpoint_url=endpoint_url, config=cfg)) for _ in range(2))  # fmt: skip
            new.meta.events.register("before-parameter-build.s3.PutObject", no_clobber)
            new.meta.events.register("before-parameter-build.s3.CompleteMultipartUpload", no_clobber)
            self._clients[cleanup] = (plain, new)
        self._cleanup = False
        parsed = urlparse(self._c.meta.endpoint_url)
        self.endpoint = f"{parsed.scheme}://{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
        self._bucket_ok = False

    def placed(self, placement: Any) -> S3Repository:
        """A view of this repository whose backup objects get placement's storage class and Object Lock."""
        if placement is None:
            return self
        view = copy.copy(self)
        view.placement = placement
        return view

    @property
    def _c(self) -> Any:
        """The S3 client (the short-deadline one inside cleanup())."""
        return self._clients[self._cleanup][0]

    @property
    def _c_new(self) -> Any:
        """The S3 client whose PUTs never replace an existing object."""
        return self._clients[self._cleanup][1]

    @contextmanager
    def cleanup(self) -> Iterator[None]:
        """Run clean-up after a failure with the short deadline (CLEANUP_SECONDS, one attempt) per request."""
        before, self._cleanup = self._cleanup, True
        try:
            yield
        finally:
            self._cleanup = before

    @classmethod
    def from_url(cls, url: str, options: S3Options | None = None) -> S3Repository:
        """Open s3://bucket/prefix; the endpoint comes from AWS_ENDPOINT_URL unless options.endpoint_url is set."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise UsageError(f"S3 repository URL must be s3://bucket/prefix, got {url!r}")
        return cls(parsed.netloc, parsed.path, options)

    def _full(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise UsageError(f"invalid object key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, e: Exception, what: str) -> RepositoryError:
        """Turn a boto error into a RepositoryError that says what to do (never includes credentials)."""
        where = f"{what} ({self.url} at {self.endpoint})"
        if isinstance(e, ClientError):
            code, status = error_code(e)
            if code == "NoSuchBucket":
                return RepositoryError(f"bucket {self.bucket} does not exist: {where}; create it or fix --repo")
            if code in AUTH_CODES or status == 403:
                return RepositoryError(
                    f"the endpoint rejected the credentials ({code}): {where}; check AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket policy"
                )
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"):
                return RepositoryError(
                    f"the storage service kept failing ({status} {code}) after {self.attempts} attempts: {where}; "
                    "retry later and check the service's health"
                )
            return RepositoryError(f"{code or status}: {where}: {e.response.get('Error', {}).get('Message', '')}")
        if isinstance(e, bx.ReadTimeoutError | DeadlineExceeded):
            wait, tries, deadline = (
                (CLEANUP_SECONDS, 1, CLEANUP_SECONDS)
                if self._cleanup
                else (self.read_timeout, self.attempts, self.timeout)
            )
            return RepositoryError(
                f"no answer within {wait:g}s, {tries} attempts (deadline {deadline:g}s): {where}; the endpoint is "
                f"overloaded or hanging: retry later (--s3-timeout / {TIMEOUT_ENV} sets the deadline)"
            )
        if isinstance(e, bx.EndpointConnectionError | bx.ConnectTimeoutError):
            return RepositoryError(
                f"could not connect after {self.attempts} attempts: {where}; check AWS_ENDPOINT_URL / "
                "--s3-endpoint, the network, and that the service is up"
            )
        if isinstance(e, bx.ConnectionClosedError):
            return RepositoryError(
                f"the endpoint closed the connection without answering, {self.attempts} attempts: {where}; "
                "check proxies / load balancers in between and retry later"
            )
        if isinstance(e, bx.NoCredentialsError):
            return RepositoryError(f"no credentials found: {where}; set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        return RepositoryError(f"S3 request failed ({type(e).__name__}: {e}): {where}")

    def _check_bucket(self) -> None:
        """Raise a clear error if the bucket is missing (HEAD on an object answers a bare 404 either way)."""
        if self._bucket_ok:
            return
        try:
            self._c.head_bucket(Bucket=self.bucket)
        except BOTO as e:
            if error_code(e)[1] == 404:
                raise RepositoryError(
                    f"bucket {self.bucket} does not exist at {self.endpoint}; create it or fix --repo"
                ) from e
            raise self._fail(e, "checking the bucket") from e
        self._bucket_ok = True

    def put_stream(
        self,
        key: str,
        src: BinaryIO,
        *,
        overwrite: bool = False,
        storage_class: str | None = None,
        retain_until: datetime | None = None,
    ) -> ObjectInfo:
        """Stream src to key (multipart above part_size); with overwrite=False an existing key is never replaced."""
        full, client = self._full(key), (self._c if overwrite else self._c_new)
        if self.placement is not None and key.startswith(BACKUPS + "/"):
            data_object = key.rsplit("/", 1)[-1] not in METADATA
            storage_class = storage_class or (self.placement.storage_class if data_object else None)
            retain_until = retain_until or self.placement.retain_until
        extra: dict[str, Any] = {"StorageClass": storage_class or self.storage_class}
        if retain_until is not None:
            extra |= {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": retain_until}
        head = read_full(src, self.transfer.multipart_threshold)
        try:
            if len(head) < self.transfer.multipart_threshold:  # all of it: one PUT, sha256 as metadata
                digest = hashlib.sha256(head).hexdigest()
                client.put_object(Bucket=self.bucket, Key=full, Body=head, Metadata={SHA_META: digest}, **extra)
                return ObjectInfo(key, len(head), digest)
            source = HashingSource(head, src)
            del head
            # s3transfer aborts the multipart upload if src raises or a part fails; nothing appears under the key
            client.upload_fileobj(source, self.bucket, full, ExtraArgs=extra, Config=self.transfer)
            digest = source.sha.hexdigest()
            self._c.put_object_tagging(
                Bucket=self.bucket, Key=full, Tagging={"TagSet": [{"Key": SHA_META, "Value": digest}]}
            )
            return ObjectInfo(key, source.size, digest)
        except BOTO as e:
            if error_code(e)[0] in CONFLICT:
                raise RepositoryError(f"{key} already exists in {self.url}; refusing to overwrite it") from e
            raise self._fail(e, f"writing {key}") from e

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False, **options: Any) -> ObjectInfo:
        """Store a small object (options as for put_stream: storage_class, retain_until)."""
        return self.put_stream(key, io.BytesIO(data), overwrite=overwrite, **options)

    def write_catalog(self, record: BackupRecord) -> None:
        """Write a catalog record; under Object Lock (options lock_until) the new version stays locked too."""
        if self.placement is not None:
            record = record.with_changes(options={**record.options, **self.placement.options()})
        until = record.options.get("lock_until")
        retain = datetime.fromisoformat(until) if until else None
        retain = retain if retain is not None and retain > datetime.now(UTC) else None
        key = f"{BACKUPS}/{record.id}/{CATALOG_NAME}"
        self.put_bytes(key, record.to_json().encode(), overwrite=True, retain_until=retain)

    def _read_from(self, key: str, position: int, etag: str) -> dict:
        """A ranged GET of key from position on, only while its ETag is unchanged (resuming a broken read)."""
        try:
            return self._c.get_object(Bucket=self.bucket, Key=self._full(key), Range=f"bytes={position}-", IfMatch=etag)
        except BOTO as e:
            if error_code(e)[0] == "PreconditionFailed":
                raise IntegrityCheckFailed(f"{key} in {self.url} was replaced while being read; retry") from e
            raise self._fail(e, f"resuming the read of {key}") from e

    def open_raw(self, key: str) -> BinaryIO:
        try:
            response = self._c.get_object(Bucket=self.bucket, Key=self._full(key))
            reopen = functools.partial(self._read_from, key)
            return ResumingBody(key, response, reopen=reopen, attempts=self.attempts, where=self.endpoint)  # type: ignore[return-value]
        except BOTO as e:
            if error_code(e)[0] == "NoSuchKey":
                raise DocumentMissing(f"{key} is missing from {self.url}") from e
            if error_code(e)[0] == "InvalidObjectState":
                raise self._restore(key) from e
            raise self._fail(e, f"reading {key}") from e

    def open_read(self, key: str, *, sha256: str | None = None, size: int | None = None) -> BinaryIO:
        """Open an object, verifying it against the given sha256, or else the one stored with the object."""
        return super().open_read(key, sha256=sha256 or self.stored_sha256(key), size=size)

    def stored_sha256(self, key: str) -> str | None:
        """The sha256 recorded when the object was written (metadata or tag), None if absent or unreadable."""
        try:
            head = self._c.head_object(Bucket=self.bucket, Key=self._full(key))
            if digest := head.get("Metadata", {}).get(SHA_META):
                return digest
            tags = self._c.get_object_tagging(Bucket=self.bucket, Key=self._full(key))["TagSet"]
            return next((t["Value"] for t in tags if t["Key"] == SHA_META), None)
        except BOTO:
            return None  # open_raw reports missing objects and unreachable endpoints with a clear message

    def _restore(self, key: str) -> RestorePending:
        """Start (or report) the restore of an archived object."""
        full = self._full(key)
        try:
            head = self._c.head_object(Bucket=self.bucket, Key=full)
            tier = head.get("StorageClass", "an archive tier")
            if 'ongoing-request="true"' in head.get("Restore", ""):
                return RestorePending(f"{key} in {self.url} is in {tier}; its restore is still running: retry later")
            request = {"Days": self.restore_days, "GlacierJobParameters": {"Tier": self.restore_tier}}
            self._c.restore_object(Bucket=self.bucket, Key=full, RestoreRequest=request)
        except BOTO as e:
            if error_code(e)[0] != "RestoreAlreadyInProgress":
                raise self._fail(e, f"restoring {key} from its archive tier") from e
        return RestorePending(
            f"{key} in {self.url} is in {tier}; requested a {self.restore_tier} restore for {self.restore_days} "
            "days: retry later (minutes to hours, up to 48 h for DEEP_ARCHIVE)"
        )

    def stat(self, key: str) -> int | None:
        try:
            return self._c.head_object(Bucket=self.bucket, Key=self._full(key))["ContentLength"]
        except BOTO as e:
            if error_code(e)[1] != 404:
                raise self._fail(e, f"looking up {key}") from e
        self._check_bucket()
        return None

    def list(self, prefix: str) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self._c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
            return sorted(o["Key"][len(base) :] for page in pages for o in page.get("Contents", []))
        except BOTO as e:
            raise self._fail(e, f"listing {prefix or '/'}") from e

    def list_with_etags(self, prefix: str) -> list[ListedObject]:
        """List objects under a prefix with their sizes and ETags (one LIST request per 1000 objects), sorted."""
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self._c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
            found = [o for page in pages for o in page.get("Contents", [])]
        except BOTO as e:
            raise self._fail(e, f"listing {prefix or '/'}") from e
        return sorted(ListedObject(o["Key"][len(base) :], int(o["Size"]), o["ETag"].strip('"')) for o in found)

    def list_sizes(self, prefix: str) -> dict[str, int]:
        """Keys under a prefix with their sizes, from the listing itself (no request per object)."""
        return {o.key: o.size for o in self.list_with_etags(prefix)}

    def delete(self, key: str) -> None:
        """Delete an object (in a versioned bucket this adds a delete marker; older versions stay)."""
        try:
            self._c.delete_object(Bucket=self.bucket, Key=self._full(key))
        except BOTO as e:
            raise self._fail(e, f"deleting {key}") from e

    def purge(self, key: str) -> None:
        """Delete every version of an object; versions under Object Lock retention are refused."""
        full = self._full(key)
        try:
            for page in self._c.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=full):
                for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    if v["Key"] == full:
                        self._c.delete_object(Bucket=self.bucket, Key=full, VersionId=v["VersionId"])
        except BOTO as e:
            if error_code(e)[0] == "AccessDenied":
                raise RepositoryError(
                    f"{key} in {self.url} has a version under Object Lock retention (or the key may not delete "
                    "versions); it can be removed only after its retain-until date"
                ) from e
            raise self._fail(e, f"purging {key}") from e

    @contextmanager
    def lock(self, name: str = "repo") -> Iterator[None]:
        """Hold locks/<name>.lock, created with a conditional PUT; a lock older than lock_stale_after is broken."""
        key, full = f"locks/{name}.lock", self._full(f"locks/{name}.lock")
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        for attempt in range(2):
            try:
                etag = self._c_new.put_object(Bucket=self.bucket, Key=full, Body=owner)["ETag"]
                break
            except BOTO as e:
                if error_code(e)[0] not in CONFLICT:
                    raise self._fail(e, f"taking the lock {key}") from e
            holder, held_etag, age = self._lock_holder(full)
            if attempt == 0 and (held_etag is None or age > self.lock_stale_after or is_stale_lock(holder)):
                self._delete_if(full, held_etag)
                continue
            raise RepositoryError(
                f"{self.url} is locked by pid {holder.get('pid')} on {holder.get('host')} for {age:.0f}s "
                f"(another backup-tools run); wait for it, or delete {self.url}/{key} if that run is gone "
                f"(it counts as stale after {self.lock_stale_after:.0f}s)"
            )
        try:
            yield
        finally:
            with self.cleanup():  # a hanging endpoint must not hold the command: the lock goes stale instead
                self._delete_if(full, etag)

    def _lock_holder(self, full: str) -> tuple[dict, str | None, float]:
        """The lock's owner record, ETag and age in seconds (server clock, 1 s resolution)."""
        try:
            resp = self._c.get_object(Bucket=self.bucket, Key=full)
            holder = json.loads(resp["Body"].read() or b"{}")
            age = (datetime.now(UTC) - resp["LastModified"]).total_seconds()
            return holder if isinstance(holder, dict) else {}, resp["ETag"], age
        except (*BOTO, ValueError):
            return {}, None, 0.0  # gone (or unreadable) already: try to take it again

    def _delete_if(self, full: str, etag: str | None) -> None:
        """Delete a lock only if it is still the one we saw (conditional DELETE where supported)."""
        try:
            self._c.delete_object(Bucket=self.bucket, Key=full, **({"IfMatch": etag} if etag else {}))
        except BOTO as e:  # a lock left behind goes stale after lock_stale_after
            if error_code(e)[0] == "NotImplemented" and etag:
                self._delete_if(full, None)


def retain_for(period: timedelta) -> datetime:
    """A retain-until date `period` from now, for put_stream(retain_until=...)."""
    return datetime.now(UTC) + period
