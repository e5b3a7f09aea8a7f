"""S3 calls behind storage-policy: a bucket's lifecycle rules and an object's tags (lifecycle/tiers.py decides)."""

from __future__ import annotations

from typing import Any

from backup_tools.errors import RepositoryError
from backup_tools.repo.s3.io import BOTO, error_code
from backup_tools.repo.s3.repository import S3Repository


def get_rules(repo: S3Repository) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules ([] when it has none)."""
    try:
        return repo._c.get_bucket_lifecycle_configuration(Bucket=repo.bucket).get("Rules", [])
    except BOTO as e:
        if error_code(e)[0] == "NoSuchLifecycleConfiguration":
            return []
        raise RepositoryError(f"could not read the lifecycle rules of bucket {repo.bucket}: {e}") from e


def put_rules(repo: S3Repository, rules: list[dict[str, Any]]) -> None:
    """Replace the bucket's lifecycle configuration with rules."""
    try:
        repo._c.put_bucket_lifecycle_configuration(Bucket=repo.bucket, LifecycleConfiguration={"Rules": rules})
    except BOTO as e:
        raise RepositoryError(f"could not write the lifecycle rules of bucket {repo.bucket}: {e}") from e


def get_tags(repo: S3Repository, key: str) -> list[dict[str, str]]:
    """An object's tag set (key relative to the repository)."""
    try:
        return repo._c.get_object_tagging(Bucket=repo.bucket, Key=repo._full(key)).get("TagSet", [])
    except BOTO as e:
        raise RepositoryError(f"could not read the tags of {key} in {repo.url}: {e}") from e


def put_tags(repo: S3Repository, key: str, tags: list[dict[str, str]]) -> None:
    """Replace an object's tag set."""
    try:
        repo._c.put_object_tagging(Bucket=repo.bucket, Key=repo._full(key), Tagging={"TagSet": tags})
    except BOTO as e:
        raise RepositoryError(f"could not tag {key} in {repo.url}: {e}") from e
