"""File-storage loss: objects deleted from the documents bucket; restore them from the bucket backup and check
that every documents row has its object again (DB <-> bucket consistency at the recovery point)."""

import hashlib
import uuid
from datetime import UTC, datetime

import pytest

from fixtures.drill import Check
from fixtures.measure import measure_rpo
from fixtures.ticker import Tick

DOCUMENTS = 300


@pytest.mark.drill("file-storage-loss", method="bucket-backup")
def test_deleted_documents_are_restored_from_the_bucket_backup(seeded_cluster, make_method, s3, drill):
    # Given a seeded primary whose documents rows each have an object in the documents bucket, and a bucket backup
    primary = seeded_cluster("primary")
    primary.safe_sql(f"DELETE FROM documents WHERE id > {DOCUMENTS}")
    keys = [k for (k,) in primary.safe_sql("SELECT storage_key FROM documents ORDER BY id")]
    bucket, prefix = s3.bucket(s3.primary_region), f"documents-{uuid.uuid4().hex[:8]}"
    client, source = s3.client(), f"s3://{bucket}/{prefix}"
    written = []  # the documents' ledger: each object's write time, like the ticker's acknowledged commits
    for seq, key in enumerate(keys):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=hashlib.sha256(key.encode()).digest() * 64)
        written.append(Tick(seq, datetime.now(UTC)))
    tool = make_method("logical", env=s3.env())
    truth = drill.snapshot(primary)
    tool.backup_tools("storage", "backup", "--source", source, "--repo", tool.repo_url, "--name", "documents")
    backed_up_at = datetime.now(UTC)

    # When a third of the objects are deleted from the bucket
    drill.mark_failure()
    client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"{prefix}/{k}"} for k in keys[::3]]})
    check = ("storage", "check", "--dsn", primary.dsn, "--source", source, "--json")
    assert tool.backup_tools(*check, check=False).returncode == 1, "the consistency check missed the deleted objects"

    # Then the bucket backup restores them, and every documents row has its object again
    with drill.phase("restore documents from bucket backup"):
        tool.backup_tools("storage", "restore", "--to", source, "--repo", tool.repo_url, "--name", "documents")
    with drill.phase("DB <-> bucket consistency check"):
        consistent = tool.backup_tools(*check, check=False)
    drill.checks.append(Check("DB <-> bucket consistency", consistent.returncode == 0, consistent.stdout[-300:]))
    listed = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    present = {o["Key"].removeprefix(f"{prefix}/") for page in listed for o in page.get("Contents", [])}
    drill.rpo = measure_rpo(written, {t.seq for t in written if keys[t.seq] in present}, drill.failure.t_fail)
    drill.rpo_basis = "documents"  # RPO: t_fail minus the newest restored document's write time; lost: documents
    age = (drill.failure.t_fail - backed_up_at).total_seconds()
    drill.notes["bucket_backup_age_seconds"] = round(age, 3)
    drill.checks.append(Check("bucket backup age", age <= drill.target.rpo.total_seconds(), f"{age:.1f} s"))
    drill.verify(primary, expected=truth)
    drill.finish(primary)
