"""The S3 fixture: a real S3 API over HTTP with a primary and a DR bucket in two regions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlparse

import pytest
from botocore.exceptions import ClientError

from fixtures.s3 import S3Service

pytestmark = pytest.mark.integration


def test_round_trip_in_both_regions(s3: S3Service, s3_prefix: str) -> None:
    for region in s3.regions:
        client = s3.client(region)
        client.put_object(Bucket=s3.bucket(region), Key=f"{s3_prefix}/hello", Body=b"hello " + region.encode())
        got = client.get_object(Bucket=s3.bucket(region), Key=f"{s3_prefix}/hello")["Body"].read()
        assert got == b"hello " + region.encode()
    assert s3.primary_bucket != s3.dr_bucket


def test_buckets_live_in_their_regions_and_are_versioned(s3: S3Service) -> None:
    client = s3.client()
    dr = client.get_bucket_location(Bucket=s3.dr_bucket)["LocationConstraint"]
    primary = client.get_bucket_location(Bucket=s3.primary_bucket)["LocationConstraint"]
    assert (primary or "us-east-1", dr) == (s3.primary_region, s3.dr_region)
    assert s3.primary_region != s3.dr_region
    for bucket in (s3.primary_bucket, s3.dr_bucket):
        assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


def test_versions_are_kept(s3: S3Service, s3_prefix: str) -> None:
    client, key = s3.client(), f"{s3_prefix}/v"
    first = client.put_object(Bucket=s3.primary_bucket, Key=key, Body=b"one")["VersionId"]
    client.put_object(Bucket=s3.primary_bucket, Key=key, Body=b"two")
    client.delete_object(Bucket=s3.primary_bucket, Key=key)
    old = client.get_object(Bucket=s3.primary_bucket, Key=key, VersionId=first)["Body"].read()
    assert old == b"one"


def test_endpoint_is_loopback_moto(s3: S3Service) -> None:
    if not s3.is_moto:
        pytest.skip("an external endpoint was given")
    parsed = urlparse(s3.endpoint)
    assert parsed.scheme == "http" and parsed.hostname == "127.0.0.1" and parsed.port


def test_repo_url_and_env(s3: S3Service) -> None:
    assert s3.repo_url(s3.dr_region, "/team/db1/") == f"s3://{s3.dr_bucket}/team/db1"
    env = s3.env()
    assert env["AWS_ENDPOINT_URL"] == s3.endpoint and env["AWS_DEFAULT_REGION"] == s3.primary_region
    if s3.credentials:
        assert env["AWS_SECRET_ACCESS_KEY"] == s3.credentials.secret_access_key
        assert s3.credentials.secret_access_key not in repr(s3)
    with pytest.raises(ValueError, match="no bucket in region"):
        s3.bucket("ap-south-1")


def test_subprocess_reaches_the_service_through_its_environment(s3: S3Service, s3_prefix: str) -> None:
    s3.client().put_object(Bucket=s3.primary_bucket, Key=f"{s3_prefix}/seen", Body=b"x")
    script = (
        "import boto3, json, sys; c = boto3.client('s3');"
        "r = c.list_objects_v2(Bucket=sys.argv[1], Prefix=sys.argv[2]);"
        "print(json.dumps([c.meta.endpoint_url, [o['Key'] for o in r.get('Contents', [])]]))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = subprocess.run(
        [sys.executable, "-c", script, s3.primary_bucket, s3_prefix],
        env={**clean, **s3.env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    endpoint, keys = json.loads(out)
    assert endpoint == s3.endpoint  # boto3 reads AWS_ENDPOINT_URL natively
    assert keys == [f"{s3_prefix}/seen"]


def test_lock_bucket_has_object_lock(s3: S3Service, s3_lock_bucket: str) -> None:
    config = s3.client().get_object_lock_configuration(Bucket=s3_lock_bucket)["ObjectLockConfiguration"]
    assert config["ObjectLockEnabled"] == "Enabled"


def test_iam_auth_rejects_unknown_keys(s3: S3Service, s3_iam_auth) -> None:  # noqa: ANN001
    good = s3.client(credentials=s3_iam_auth)
    assert good.list_objects_v2(Bucket=s3.primary_bucket, MaxKeys=1)["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError) as err:
        s3.client().list_objects_v2(Bucket=s3.primary_bucket, MaxKeys=1)
    assert err.value.response["Error"]["Code"] == "InvalidAccessKeyId"
