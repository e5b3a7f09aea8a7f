"""File-bucket backups: directories and real moto buckets, incremental, restore, verify, DB <-> bucket orphans."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backup_tools.backup.files import (
    backup_bucket,
    check_consistency,
    list_bucket_backups,
    read_bucket_backup,
    restore_bucket,
    verify_bucket_backup,
)
from backup_tools.errors import (
    BackupNotFound,
    DocumentMissing,
    EncryptionKeyError,
    IntegrityCheckFailed,
    RepositoryError,
    UsageError,
)
from backup_tools.repo.base import FileRepository
from backup_tools.repo.buckets import DirectoryBucket, S3Bucket, open_bucket
from backup_tools.security.keys import generate_key_file_text
from fixtures.s3 import S3Service


def quiet(_: str) -> None:
    """Swallow progress lines."""


def doc(key: str, version: int = 1, size: int = 5000) -> bytes:
    """Deterministic document content (compressible, like real PDFs' text parts)."""
    line = f"{key} v{version} " + hashlib.sha256(f"{key}{version}".encode()).hexdigest() + "\n"
    return (line * (size // len(line) + 1)).encode()[:size]


KEYS = [f"cases/{c}/{i}/file-{i}.pdf" for c, i in ((1, 1), (1, 2), (2, 3), (3, 4), (3, 5))]


def fill(root: Path, keys: list[str], version: int = 1) -> None:
    """Write documents into a directory."""
    for key in keys:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(doc(key, version))


def tree(root: Path) -> dict[str, bytes]:
    """Every file under a directory with its content."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def repo(tmp_path: Path) -> FileRepository:
    """An empty file:// repository."""
    (tmp_path / "repo").mkdir()
    return FileRepository(tmp_path / "repo")


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A document directory with five files."""
    root = tmp_path / "docs"
    fill(root, KEYS)
    return root


def stored_objects(repo: FileRepository, backup_id: str) -> list[str]:
    """Objects a bucket backup stored itself (not referenced from an earlier one)."""
    return [k for k in repo.list("buckets/") if f"/{backup_id}/objects/" in k]


def test_incremental_directory_backup_stores_only_changes(repo, docs):
    first = backup_bucket(DirectoryBucket(docs), repo, name="docs", log=quiet)
    assert (first.copied, first.reused) == (5, 0) and len(stored_objects(repo, first.manifest.id)) == 5
    (docs / KEYS[0]).write_bytes(doc(KEYS[0], 2))  # same size, new content: sha256 decides
    (docs / KEYS[1]).unlink()
    fill(docs, ["cases/9/99/new.pdf"])
    second = backup_bucket(DirectoryBucket(docs), repo, name="docs", log=quiet)
    assert (second.copied, second.reused) == (2, 3) and second.manifest.parent == first.manifest.id
    assert len(stored_objects(repo, second.manifest.id)) == 2
    scopes = {e.key: e.scope for e in second.manifest.entries}
    assert scopes[KEYS[0]] == second.manifest.id and scopes[KEYS[2]] == first.manifest.id
    assert KEYS[1] not in scopes
    assert [m.id for m in list_bucket_backups(repo, "docs")] == [first.manifest.id, second.manifest.id]
    third = backup_bucket(DirectoryBucket(docs), repo, name="docs", log=quiet)
    assert third.copied == 0 and stored_objects(repo, third.manifest.id) == []


def test_deleted_documents_come_back_byte_identical(repo, docs, tmp_path):
    before = tree(docs)
    backup_bucket(DirectoryBucket(docs), repo, name="docs", log=quiet)
    for key in KEYS[:2]:
        (docs / key).unlink()
    (docs / KEYS[2]).write_bytes(b"overwritten by a bug")
    result = restore_bucket(repo, DirectoryBucket(docs), name="docs", log=quiet)
    assert (result.restored, result.unchanged) == (3, 2)
    assert tree(docs) == before
    elsewhere = tmp_path / "elsewhere"
    restore_bucket(repo, open_bucket(str(elsewhere)), name="docs", log=quiet)
    assert tree(elsewhere) == before


def test_an_earlier_backup_restores_the_earlier_versions(repo, docs, tmp_path):
    first = backup_bucket(DirectoryBucket(docs), repo, name="docs", log=quiet).manifest
    fill(docs, KEYS, version=2)
    backup_bucket(DirectoryBucket(docs), repo, name="docs", log=quiet)
    restore_bucket(repo, DirectoryBucket(tmp_path / "old"), name="docs", backup=first.id, log=quiet)
    assert tree(tmp_path / "old") == {k: doc(k, 1) for k in KEYS}
    assert read_bucket_backup(repo, "docs", at=first.finished_at).id == first.id
    with pytest.raises(BackupNotFound, match="no bucket backup"):
        read_bucket_backup(repo, "docs", at=first.started_at.replace(year=2000))


def test_verify_names_a_bit_flipped_stored_document(repo, docs):
    manifest = backup_bucket(DirectoryBucket(docs), repo, name="docs", log=quiet).manifest
    assert verify_bucket_backup(repo, name="docs", log=quiet).ok
    victim = next(e for e in manifest.entries if e.key == KEYS[3])
    path = repo.root / victim.stored
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))
    result = verify_bucket_backup(repo, name="docs", log=quiet)
    assert not result.ok and result.checked == 5 and len(result.problems) == 1
    assert KEYS[3] in result.problems[0] and victim.stored in result.problems[0]
    with pytest.raises(IntegrityCheckFailed):
        restore_bucket(repo, DirectoryBucket(docs.parent / "r"), name="docs", log=quiet)
    assert not (docs.parent / "r" / KEYS[3]).exists()  # nothing partial left behind


def test_encrypted_bucket_backup_needs_its_key(repo, docs, tmp_path, monkeypatch):
    monkeypatch.delenv("PGDRILL_KEY_FILE", raising=False)
    key = tmp_path / "k"
    key.write_text(generate_key_file_text())
    manifest = backup_bucket(DirectoryBucket(docs), repo, name="docs", key_file=str(key), log=quiet).manifest
    assert all(e.codec == "zstd" and e.stored_size < e.size for e in manifest.entries)
    raw = (repo.root / manifest.entries[0].stored).read_bytes()
    assert KEYS[0].encode() not in raw  # ciphertext, not the document
    with pytest.raises(EncryptionKeyError):
        restore_bucket(repo, DirectoryBucket(tmp_path / "r"), name="docs", log=quiet)
    restore_bucket(repo, DirectoryBucket(tmp_path / "r"), name="docs", key_file=str(key), log=quiet)
    assert tree(tmp_path / "r") == tree(docs)
    keyless = verify_bucket_backup(repo, name="docs", log=quiet)
    assert keyless.ok and not keyless.plaintext_checked
    assert verify_bucket_backup(repo, name="docs", key_file=str(key), log=quiet).plaintext_checked


def test_bad_names_and_unsafe_keys_are_refused(repo, docs, tmp_path):
    with pytest.raises(UsageError, match="one path segment"):
        backup_bucket(DirectoryBucket(docs), repo, name="../x", log=quiet)
    with pytest.raises(UsageError, match="not a safe relative path"), open(docs / KEYS[0], "rb") as f:
        DirectoryBucket(tmp_path).put("../escape", f)


# --- real S3 buckets (moto over HTTP) ------------------------------------------------------------------------


def put_documents(s3: S3Service, prefix: str, keys: list[str], version: int = 1) -> None:
    """Upload documents for storage keys straight into the primary bucket, as an application would."""
    client = s3.client()
    for key in keys:
        client.put_object(Bucket=s3.primary_bucket, Key=f"{prefix}/{key}", Body=doc(key, version))


@pytest.fixture
def s3_env(s3: S3Service, monkeypatch) -> S3Service:
    """Point boto3 in this process at the moto server (S3Bucket opens URLs like the CLI does)."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3


@pytest.mark.integration
def test_s3_bucket_incremental_by_etag_restore_and_verify(s3_env: S3Service, s3_prefix: str):
    s3 = s3_env
    docs_url = s3.repo_url(s3.primary_region, f"{s3_prefix}/docs")
    repo = s3.repository(s3.dr_region, f"{s3_prefix}/repo")
    put_documents(s3, f"{s3_prefix}/docs", KEYS)
    first = backup_bucket(open_bucket(docs_url), repo, name="docs", log=quiet)
    assert first.copied == 5 and all(e.etag for e in first.manifest.entries)
    put_documents(s3, f"{s3_prefix}/docs", KEYS[:1], version=2)
    second = backup_bucket(open_bucket(docs_url), repo, name="docs", log=quiet)
    assert (second.copied, second.reused) == (1, 4)
    client = s3.client()
    for key in KEYS[1:3]:
        client.delete_object(Bucket=s3.primary_bucket, Key=f"{s3_prefix}/docs/{key}")
    result = restore_bucket(repo, S3Bucket(docs_url), name="docs", log=quiet)
    assert (result.restored, result.unchanged) == (2, 3)
    for key, version in zip(KEYS, (2, 1, 1, 1, 1), strict=True):
        got = client.get_object(Bucket=s3.primary_bucket, Key=f"{s3_prefix}/docs/{key}")["Body"].read()
        assert got == doc(key, version)
    victim = next(e for e in second.manifest.entries if e.key == KEYS[4])
    full = f"{s3_prefix}/repo/{victim.stored}"
    data = bytearray(s3.client(s3.dr_region).get_object(Bucket=s3.dr_bucket, Key=full)["Body"].read())
    data[3] ^= 0x01
    s3.client(s3.dr_region).put_object(Bucket=s3.dr_bucket, Key=full, Body=bytes(data))
    verdict = verify_bucket_backup(repo, name="docs", log=quiet)
    assert [KEYS[4] in p for p in verdict.problems] == [True]


@pytest.mark.integration
def test_a_document_deleted_from_an_s3_bucket_during_the_backup_is_skipped(s3_env: S3Service, s3_prefix: str):
    s3 = s3_env
    docs_url = s3.repo_url(s3.primary_region, f"{s3_prefix}/docs")
    put_documents(s3, f"{s3_prefix}/docs", KEYS[:2])
    with pytest.raises(DocumentMissing, match="nope is missing from s3://"):
        S3Bucket(docs_url).open("nope")

    class Vanishing(S3Bucket):
        def open(self, key: str):
            if key == KEYS[1]:
                s3.client().delete_object(Bucket=s3.primary_bucket, Key=f"{s3_prefix}/docs/{key}")
            return super().open(key)

    repo = s3.repository(s3.dr_region, f"{s3_prefix}/repo")
    result = backup_bucket(Vanishing(docs_url), repo, name="docs", log=quiet)
    assert (result.copied, result.vanished) == (1, 1)


@pytest.mark.integration
def test_database_and_bucket_orphans_both_ways(s3_env: S3Service, s3_prefix: str, make_cluster, tmp_path: Path):
    from fixtures.seed import seed_database

    s3 = s3_env
    cluster = make_cluster("app")
    cluster.init()
    cluster.start()
    with cluster.connect() as conn:
        seed_database(conn, scale=0.002)  # 50 documents
        keys = sorted(r[0] for r in conn.execute("SELECT storage_key FROM documents"))
    assert len(keys) == 50 and all(k.startswith("cases/") for k in keys)
    prefix = f"{s3_prefix}/docs"
    put_documents(s3, prefix, keys)
    docs_url = s3.repo_url(s3.primary_region, prefix)
    with cluster.connect() as conn:
        assert check_consistency(conn, [o.key for o in open_bucket(docs_url).list_objects()]).ok
    client = s3.client()
    lost = keys[5:8]
    for key in lost:
        client.delete_object(Bucket=s3.primary_bucket, Key=f"{prefix}/{key}")
    client.put_object(Bucket=s3.primary_bucket, Key=f"{prefix}/cases/404/9999/stray.pdf", Body=b"no row")
    with cluster.connect() as conn:
        result = check_consistency(conn, [o.key for o in open_bucket(docs_url).list_objects()], limit=2)
    assert (result.rows, result.objects, result.missing_objects, result.orphan_objects) == (50, 48, 3, 1)
    assert result.first_missing == tuple(lost[:2]) and result.first_orphans == ("cases/404/9999/stray.pdf",)
    # the same check from the CLI, and at a recovery point: against the bucket backup taken then
    repo_url = s3.repo_url(s3.dr_region, f"{s3_prefix}/repo")
    env = {**os.environ, **s3.env()}
    run = [sys.executable, "-m", "backup_tools", "storage"]
    done = subprocess.run([*run, "backup", "--source", docs_url, "--repo", repo_url, "--name", "docs"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*run, "check", "--dsn", cluster.dsn, "--repo", repo_url, "--name", "docs", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr
    doc_ = json.loads(done.stdout)
    assert (doc_["missing_objects"], doc_["orphan_objects"], doc_["ok"]) == (3, 1, False)
    assert doc_["first_missing"] == lost
    usage = subprocess.run([*run, "check", "--dsn", cluster.dsn], env=env, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "needs --source" in usage.stderr


def test_cli_backup_restore_verify_exit_codes(repo, docs, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "backup_tools", "storage", *args], capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    done = cli("backup", "--source", str(docs), "--repo", repo.url)
    assert done.returncode == 0 and "5 stored, 0 unchanged" in done.stdout, done.stderr
    assert "docs" in cli("list", "--repo", repo.url, "--name", "docs").stdout  # default name: the directory's
    (docs / KEYS[0]).unlink()
    done = cli("restore", "--repo", repo.url, "--name", "docs", "--to", f"file://{docs}")
    assert done.returncode == 0 and "1 restored, 4 already identical" in done.stdout, done.stderr
    assert (docs / KEYS[0]).read_bytes() == doc(KEYS[0])
    assert cli("verify", "--repo", repo.url, "--name", "docs").returncode == 0
    stored = next(p for p in (repo.root / "buckets").rglob("objects/*"))
    stored.write_bytes(stored.read_bytes()[:-1])  # truncated
    done = cli("verify", "--repo", repo.url, "--name", "docs")
    assert done.returncode == 1 and stored.name in done.stdout and done.stdout.rstrip().endswith("5 documents checked")
    missing = cli("restore", "--repo", repo.url, "--name", "nope", "--to", str(tmp_path / "x"))
    assert missing.returncode == 1 and "no bucket backup" in missing.stderr  # operational: exit 1


def test_a_failed_write_to_the_repository_is_not_taken_for_a_vanished_document(tmp_path: Path, repo) -> None:
    """A document gone from the source is skipped; a repository write failing with 'No such file' is an error."""
    src = tmp_path / "docs"
    fill(src, KEYS[:2])

    class Vanishing(DirectoryBucket):
        def open(self, key: str):
            if key == KEYS[1]:
                (self.root / key).unlink()
            return super().open(key)

    result = backup_bucket(Vanishing(src), repo, name="documents", log=quiet)
    assert (result.copied, result.vanished) == (1, 1)
    fill(src, KEYS[:2])

    class Failing(FileRepository):
        def put_stream(self, key, src, *, overwrite=False):
            if "/objects/" in key:
                raise RepositoryError(f"could not write {key} to {self.url}: No such file or directory; check space")
            return super().put_stream(key, src, overwrite=overwrite)

    with pytest.raises(RepositoryError, match="could not write"):
        backup_bucket(DirectoryBucket(src), Failing(repo.root), name="other", log=quiet)
    assert list_bucket_backups(repo, "other") == []
