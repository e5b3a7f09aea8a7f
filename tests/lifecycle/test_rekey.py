"""Key rotation (`backup-tools rekey`) on a real moto server: key file A -> B, -> KMS and back, interrupted rekeys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import boto3
import psycopg
import pytest

from backup_tools.catalog import BackupRecord, new_backup_id
from backup_tools.errors import BackupToolsError, EncryptionKeyError
from backup_tools.lifecycle.rekey import rekey
from backup_tools.pg.checks import fingerprint
from backup_tools.pg.ports import free_port
from backup_tools.repo.objects import read_envelope
from backup_tools.security.keys import LocalKey, generate_key_file_text, load_key_file, new_data_key
from backup_tools.wal.archive import wal_fetch, wal_push
from tests.wal.test_wal import fake_segment

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess[str]:
    """Run backup-tools as its own process with the S3 endpoint in its environment; check its exit code."""
    done = subprocess.run([sys.executable, "-m", "backup_tools", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})  # fmt: skip
    assert done.returncode == code, f"backup-tools {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done


def keyfile(path: Path) -> Path:
    """Write a new key file."""
    path.write_text(generate_key_file_text())
    return path


def key_ids(s3, prefix: str) -> dict[str, str | None]:
    """Every wrapped-key location in the repository -> the key id wrapping it (read straight from the bucket)."""
    client, out = s3.client(), {}
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3.primary_bucket, Prefix=prefix + "/")
    for key in (o["Key"] for page in pages for o in page.get("Contents", [])):
        name = key[len(prefix) + 1 :]
        body = client.get_object(Bucket=s3.primary_bucket, Key=key)["Body"].read()
        if name.endswith("catalog.json"):
            out[name] = (json.loads(body)["encryption"] or {}).get("key_id")
        elif name.endswith("manifest.json") and name.startswith("buckets/"):
            out[name] = ",".join(sorted({m["key_id"] for m in json.loads(body)["sealings"].values() if m}))
        elif name.startswith("wal/"):
            out[name] = (json.loads(body.split(b"\n", 2)[1])["encryption"] or {}).get("key_id")
    return out


def test_rekey_full_wal_logical_and_bucket_backups_then_kms_and_back(s3, s3_prefix, make_cluster, tmp_path):
    a, b, c = (keyfile(tmp_path / f"{n}.key") for n in "abc")
    url = s3.repo_url(s3.primary_region, s3_prefix)
    env = s3.env() | {"PGDRILL_KEY_FILE": str(a)}  # backups and archive_command encrypt with key A
    primary = make_cluster("primary", env=env)
    primary.init(has_archiving=True, archive_url=url)
    primary.start()
    primary.safe_sql("CREATE TABLE ledger (id int PRIMARY KEY, note text)")
    primary.safe_sql("INSERT INTO ledger SELECT g, 'row ' || g FROM generate_series(1, 200) g")
    full = cli("backup", "--dsn", primary.dsn, "--repo", url, "--kind", "full", env=env).stdout.strip()
    logical = cli("backup", "--dsn", primary.dsn, "--repo", url, "--kind", "logical", env=env).stdout.strip()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "contract.pdf").write_bytes(b"%PDF signed" * 100)
    cli("storage", "backup", "--source", str(docs), "--repo", url, "--name", "docs", env=env)
    with primary.connect() as conn:
        truth = fingerprint(conn)
    primary.archive_current_wal()

    primary.stop()  # archive_command still encrypts with key A: rekey after it switched (here: stopped)
    before = key_ids(s3, s3_prefix)
    id_a, id_b = load_key_file(a).key_id, load_key_file(b).key_id
    assert set(before.values()) == {id_a} and sum(k.startswith("wal/") for k in before) >= 2

    # a dry run lists every wrapped key it would change, and changes nothing
    env_b = s3.env() | {"PGDRILL_KEY_FILE": str(b)}
    dry = cli("rekey", "--repo", url, "--key-file", str(a), "--new-key-file", str(b), "--dry-run", env=env_b)
    assert f"backups/{full}/catalog.json" in dry.stdout and f"backups/{logical}/catalog.json" in dry.stdout
    assert f"would re-wrap {len(before)} object(s) to key id {id_b}" in dry.stdout
    assert key_ids(s3, s3_prefix) == before

    cli("rekey", "--repo", url, "--key-file", str(a), "--new-key-file", str(b), env=env_b)
    assert set(key_ids(s3, s3_prefix).values()) == {id_b}
    again = cli("rekey", "--repo", url, "--key-file", str(a), "--new-key-file", str(b), env=env_b)
    assert f"re-wrapped 0 object(s) to key id {id_b}; {len(before)} already wrapped by it" in again.stdout

    # key A no longer opens anything: the clear wrong-key error, exit 3, nothing restored
    env_a = s3.env() | {"PGDRILL_KEY_FILE": str(a)}
    wrong = cli("restore", "--repo", url, "--to", str(tmp_path / "wrong"), "--backup", full, env=env_a, code=3)
    assert f"encrypted with key id {id_b}, you gave key id {id_a}" in wrong.stderr
    assert not (tmp_path / "wrong").exists() or not any((tmp_path / "wrong").iterdir())
    cli("storage", "restore", "--repo", url, "--name", "docs", "--to", str(tmp_path / "d-a"), env=env_a, code=3)

    # key B restores the physical backup with its (re-wrapped) WAL, the dump and the documents
    data, sock, port = tmp_path / "restored", tmp_path / "sock", free_port()
    sock.mkdir()
    cli("restore", "--repo", url, "--to", str(data), "--backup", full, "--start", "--port", str(port),
        "--socket-dir", str(sock), env=env_b)  # fmt: skip
    dsn = f"host={sock} port={port} user=postgres dbname=rekeyed"
    try:
        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            assert fingerprint(conn).diff(truth) == []
            conn.execute("CREATE DATABASE rekeyed")
        wrong = cli("restore", "--repo", url, "--dsn", dsn, "--backup", logical, env=env_a, code=3)
        assert f"encrypted with key id {id_b}, you gave key id {id_a}" in wrong.stderr
        cli("restore", "--repo", url, "--dsn", dsn, "--backup", logical, env=env_b)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 200
    finally:
        subprocess.run([str(primary.pg.tool("pg_ctl")), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, check=True)  # fmt: skip
    cli("storage", "restore", "--repo", url, "--name", "docs", "--to", str(tmp_path / "d-b"), env=env_b)
    assert (tmp_path / "d-b" / "contract.pdf").read_bytes() == (docs / "contract.pdf").read_bytes()

    # rotation to a KMS key (moto KMS on the same server), then back to a key file without the old key file
    kms = boto3.client("kms", endpoint_url=s3.endpoint, region_name=s3.primary_region,
                       aws_access_key_id="pgdrill-moto", aws_secret_access_key="pgdrill-moto")  # fmt: skip
    arn = kms.create_key(Description="pgdrill rekey test")["KeyMetadata"]["Arn"]
    alias = f"alias/pgdrill-{os.urandom(4).hex()}"
    kms.create_alias(AliasName=alias, TargetKeyId=arn)
    cli("rekey", "--repo", url, "--key-file", str(b), "--new-kms-key-id", alias, env=s3.env())
    assert set(key_ids(s3, s3_prefix).values()) == {arn}
    no_key = s3.env() | {"PGDRILL_KEY_FILE": ""}
    cli("storage", "restore", "--repo", url, "--name", "docs", "--to", str(tmp_path / "d-kms"), env=no_key)
    wal = next(k for k in before if k.startswith("wal/") and len(k) == 28)[4:]
    cli("wal-fetch", wal, str(tmp_path / wal), "--repo", url, env=no_key)
    cli("rekey", "--repo", url, "--new-key-file", str(c), env=no_key)
    assert set(key_ids(s3, s3_prefix).values()) == {load_key_file(c).key_id}
    cli("wal-fetch", wal, str(tmp_path / "again"), "--repo", url, "--key-file", str(c), env=s3.env())
    assert (tmp_path / "again").read_bytes() == (tmp_path / wal).read_bytes()
    old = cli("wal-fetch", wal, str(tmp_path / "old"), "--repo", url, "--key-file", str(b), env=s3.env(), code=200)
    assert "you gave key id" in old.stderr and not (tmp_path / "old").exists()  # wal-fetch: stop recovery


class Interrupted(LocalKey):
    """A new key whose third wrap fails, as if the rekey was killed there."""

    calls: list[int] = []

    def wrap(self, data_key: bytes, *, context: dict[str, str]) -> tuple[bytes, str]:
        self.calls.append(1)
        if len(self.calls) == 3:
            raise BackupToolsError("killed")
        return super().wrap(data_key, context=context)


def test_interrupted_rekey_leaves_every_object_readable_by_one_key_and_resumes(s3, s3_prefix, tmp_path):
    a, b = keyfile(tmp_path / "a.key"), keyfile(tmp_path / "b.key")
    repo = s3.repository(s3.primary_region, s3_prefix)
    names = []
    for seg in range(1, 5):
        (tmp_path / str(seg)).mkdir()
        path = fake_segment(tmp_path / str(seg) / f"0000000100000000000000{seg:02X}", fill=bytes([seg + 64]))
        names.append(wal_push(path, repo=repo, key_file=a).name)
    _, meta = new_data_key(load_key_file(a))
    now = datetime.now(UTC)
    record = BackupRecord(id=new_backup_id(now, "full"), kind="full", status="DONE", start_time=now, encryption=meta)
    repo.write_catalog(record)
    new = Interrupted(key=load_key_file(b).key, key_id=load_key_file(b).key_id)
    with pytest.raises(BackupToolsError, match="killed"):
        rekey(repo, new=new, key_file=a, log=lambda _: None)
    opened = {}
    for name in names:
        readers = []
        for key in (a, b):
            try:
                wal_fetch(name, tmp_path / f"{name}.{key.stem}", repo=repo, key_file=key)
                readers.append(key.stem)
            except EncryptionKeyError:
                pass
        opened[name] = readers
    assert all(len(r) == 1 for r in opened.values()), opened  # never neither key, never both
    assert sum(r == ["b"] for r in opened.values()) == 1  # the catalog, then one WAL file, were re-wrapped
    assert repo.read_catalog(record.id).encryption["key_id"] == load_key_file(b).key_id

    resumed = rekey(repo, new=load_key_file(b), key_file=a, log=lambda _: None)
    assert len(resumed.changed) == 3 and len(resumed.already) == 2
    for name in names:
        header, raw = read_envelope(repo, f"wal/{name}")
        raw.close()
        assert header["encryption"]["key_id"] == load_key_file(b).key_id
        assert wal_fetch(name, tmp_path / f"{name}.final", repo=repo, key_file=b) > 0
