"""Backup repositories: one interface (file:// and s3://), the object seam (compress, encrypt, verify), buckets."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from backup_tools.errors import UsageError
from backup_tools.repo.base import FileRepository, Repository

__all__ = ["FileRepository", "Repository", "open_repository"]


def open_repository(url: str) -> Repository:
    """Open a repository from its URL: file:///path or s3://bucket/prefix."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UsageError(f"file repository URL must be file:///absolute/path, got {url!r}")
        return FileRepository(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from backup_tools.repo.s3.repository import S3Repository

        return S3Repository.from_url(url)
    raise UsageError(f"unsupported repository URL {url!r}: use file:///path or s3://bucket/prefix")
