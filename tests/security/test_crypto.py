"""Chunked AES-256-GCM streams and envelope keys (key file and AWS KMS on a real moto server)."""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from backup_tools.catalog import BackupRecord
from backup_tools.errors import BackupToolsError, EncryptionKeyError, IntegrityCheckFailed, UsageError
from backup_tools.repo.base import FileRepository
from backup_tools.repo.compress import compressing_reader, decompressing_reader
from backup_tools.security.aead import (
    CHUNK_SIZE,
    COMMIT,
    NONCE,
    TAG,
    decrypt_stream,
    decrypt_to_file,
    decrypting_reader,
    encrypting_reader,
)
from backup_tools.security.keys import (
    KEY_FILE_ENV,
    KmsKey,
    LocalKey,
    generate_key_file_text,
    key_file_id,
    load_key_file,
    new_data_key,
    rewrap,
    unwrap_data_key,
    wrapper_for,
)
from tests.support.streams import Trickle

MiB = 1 << 20
BACKUP, OBJECT = "20240101T000000-full", "base/base.tar"
SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * MiB + 3]


# ---------------------------------------------------------------- helpers


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "backup.key"
    path.parent.mkdir()
    path.write_text(generate_key_file_text())
    return path


@pytest.fixture
def envelope(key_file: Path) -> tuple[LocalKey, bytes, dict[str, Any]]:
    """A key file wrapper, a new data key, and its catalog metadata."""
    wrapper = load_key_file(key_file)
    data_key, meta = new_data_key(wrapper)
    return wrapper, data_key, meta


@pytest.fixture
def dk(envelope: tuple[LocalKey, bytes, dict[str, Any]]) -> dict[str, Any]:
    """Keyword arguments naming the data key and object for the stream functions."""
    _, data_key, meta = envelope
    return {"data_key": data_key, "key_id": meta["data_key_id"], "backup_id": BACKUP, "object_name": OBJECT}


def encrypt(data: bytes, kw: dict[str, Any]) -> bytes:
    return encrypting_reader(io.BytesIO(data), **kw).read()


def decrypt(data: bytes, kw: dict[str, Any]) -> bytes:
    return decrypting_reader(io.BytesIO(data), **kw).read()


def header_len(kw: dict[str, Any]) -> int:
    return 4 + 1 + 4 + 16 + 1 + len(kw["key_id"].encode()) + COMMIT


def split(stored: bytes, kw: dict[str, Any]) -> tuple[bytes, list[bytes]]:
    """Split an encrypted object into its header and its chunk records."""
    h, rec = header_len(kw), NONCE + CHUNK_SIZE + TAG
    body = stored[h:]
    return stored[:h], [body[i : i + rec] for i in range(0, len(body), rec)]


def sample(size: int) -> bytes:
    return os.urandom(size)


def assert_nothing_left(directory: Path) -> None:
    assert sorted(p.name for p in directory.iterdir()) == []


# ---------------------------------------------------------------- key files


def test_key_file_text_is_32_random_bytes_base64_on_one_line() -> None:
    text = generate_key_file_text()
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=\n", text)
    assert len(base64.b64decode(text)) == 32
    assert generate_key_file_text() != text


def test_load_key_file_gives_stable_short_key_id(key_file: Path) -> None:
    key = load_key_file(key_file)
    assert key.key == base64.b64decode(key_file.read_text())
    assert key.key_id == key_file_id(key.key) == load_key_file(str(key_file)).key_id
    assert re.fullmatch(r"kf-[0-9a-f]{16}", key.key_id)
    assert key_file.read_text().strip() not in repr(key)


def test_key_file_with_crlf_and_spaces_is_accepted(key_file: Path) -> None:
    key = load_key_file(key_file)
    key_file.write_text("  " + key_file.read_text().strip() + "\r\n\n")
    assert load_key_file(key_file).key_id == key.key_id


def test_pgdrill_key_file_env_is_the_default(key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    assert load_key_file().path == key_file
    other = tmp_path / "other.key"
    other.write_text(generate_key_file_text())
    assert load_key_file(other).path == other  # an explicit path wins over the environment


def test_no_key_file_at_all_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    with pytest.raises(EncryptionKeyError, match=f"--key-file.*{KEY_FILE_ENV}"):
        load_key_file()


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(EncryptionKeyError, match="does not exist.*keygen") as info:
        load_key_file(tmp_path / "nope.key")
    assert info.value.exit_code == 3


def test_unreadable_key_file(tmp_path: Path) -> None:
    with pytest.raises(EncryptionKeyError, match="cannot read key file"):
        load_key_file(tmp_path)  # a directory


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_key_file_without_read_permission(key_file: Path) -> None:
    key_file.chmod(0)
    with pytest.raises(EncryptionKeyError, match="cannot read key file.*Permission denied"):
        load_key_file(key_file)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b"AAAA\nBBBB\n", "2 lines"),
        (b"not base64 at all!\n", "not valid base64"),
        (base64.b64encode(b"k" * 16) + b"\n", "16 bytes"),
        (base64.b64encode(b"k" * 33) + b"\n", "33 bytes"),
        (b"\xff\xfe" * 22 + b"\n", "not valid base64"),
    ],
    ids=["empty", "two-lines", "not-base64", "short", "long", "binary"],
)
def test_malformed_key_file(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(EncryptionKeyError, match=f"{re.escape(str(path))} is malformed.*{why}") as info:
        load_key_file(path)
    if shown := content.strip().decode(errors="ignore")[:8]:
        assert shown not in str(info.value)  # never echo the file's content


# ---------------------------------------------------------------- envelope metadata


def test_metadata_is_json_in_the_catalog_and_holds_no_key_material(envelope, key_file: Path) -> None:
    wrapper, data_key, meta = envelope
    record = BackupRecord(id=BACKUP, kind="full", status="DONE", start_time=datetime.now(UTC), encryption=meta)
    text = record.to_json()
    for secret in (data_key, wrapper.key):
        assert base64.b64encode(secret).decode() not in text and secret.hex() not in text
    again = BackupRecord.from_json(text).encryption
    assert again == meta
    assert set(meta) == {"format", "algorithm", "data_key_id", "wrapping", "key_id", "wrapped_key"}
    assert (meta["wrapping"], meta["key_id"], meta["algorithm"]) == (
        "keyfile",
        wrapper.key_id,
        "AES-256-GCM-chunked-v1",
    )
    assert unwrap_data_key(again, load_key_file(key_file)) == data_key


def test_wrong_key_file_names_both_key_ids(envelope, tmp_path: Path) -> None:
    wrapper, _, meta = envelope
    other = tmp_path / "other.key"
    other.write_text(generate_key_file_text())
    wrong = load_key_file(other)
    with pytest.raises(EncryptionKeyError) as info:
        unwrap_data_key(meta, wrong)
    msg = str(info.value)
    assert f"backup encrypted with key id {wrapper.key_id}, you gave key id {wrong.key_id}" in msg
    assert other.read_text().strip() not in msg and info.value.exit_code == 3


def test_no_wrapper_for_encrypted_backup(envelope) -> None:
    _, _, meta = envelope
    with pytest.raises(EncryptionKeyError, match=f"{meta['key_id']}.*{KEY_FILE_ENV}"):
        unwrap_data_key(meta, None)


@pytest.mark.parametrize("field", ["wrapped_key", "data_key_id"])
def test_altered_metadata_fails_authentication(envelope, field: str) -> None:
    wrapper, _, meta = envelope
    value = meta[field]
    altered = value[:-6] + ("AAAA" if value[-6:-2] != "AAAA" else "BBBB") + value[-2:]
    with pytest.raises(IntegrityCheckFailed, match="altered"):
        unwrap_data_key(meta | {field: altered}, wrapper)


def test_incomplete_or_unknown_metadata(envelope) -> None:
    wrapper, _, meta = envelope
    with pytest.raises(IntegrityCheckFailed, match="lacks wrapped_key"):
        unwrap_data_key({k: v for k, v in meta.items() if k != "wrapped_key"}, wrapper)
    with pytest.raises(IntegrityCheckFailed, match="upgrade backup-tools"):
        unwrap_data_key(meta | {"format": 2}, wrapper)
    with pytest.raises(UsageError, match="not encrypted"):
        unwrap_data_key(None, wrapper)


def test_rewrap_between_key_files_keeps_old_data_readable(envelope, tmp_path: Path) -> None:
    old, data_key, meta = envelope
    stored = encrypt(b"written before rotation", {"data_key": data_key, "key_id": meta["data_key_id"],
                                                  "backup_id": BACKUP, "object_name": OBJECT})  # fmt: skip
    (tmp_path / "new.key").write_text(generate_key_file_text())
    new = load_key_file(tmp_path / "new.key")
    rotated = rewrap(meta, old, new)
    assert rotated["key_id"] == new.key_id != meta["key_id"]
    assert rotated["data_key_id"] == meta["data_key_id"] and rotated["wrapped_key"] != meta["wrapped_key"]
    with pytest.raises(EncryptionKeyError, match=f"key id {new.key_id}, you gave key id {old.key_id}"):
        unwrap_data_key(rotated, old)
    key = unwrap_data_key(rotated, wrapper_for(rotated, key_file=tmp_path / "new.key"))
    kw = {"data_key": key, "key_id": rotated["data_key_id"], "backup_id": BACKUP, "object_name": OBJECT}
    assert decrypt(stored, kw) == b"written before rotation"


# ---------------------------------------------------------------- streams: round trips and format


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"{n}B")
def test_round_trip(dk: dict[str, Any], size: int) -> None:
    data = sample(size)
    stored = encrypt(data, dk)
    assert len(stored) == header_len(dk) + size + max(1, -(-size // CHUNK_SIZE)) * (NONCE + TAG)
    assert stored[:5] == b"PGDE\x01"
    assert len(split(stored, dk)[1]) == max(1, -(-size // CHUNK_SIZE))
    assert decrypting_reader(io.BytesIO(stored), **dk).read() == data


def test_ciphertext_hides_plaintext_and_is_fresh_each_time(dk: dict[str, Any]) -> None:
    data = b"secret customer row;" * 10_000
    first, second = encrypt(data, dk), encrypt(data, dk)
    assert b"secret customer row" not in first
    assert first != second and first[header_len(dk) :][:64] != second[header_len(dk) :][:64]


def test_encrypting_reader_streams_without_staging(dk: dict[str, Any]) -> None:
    src = io.BytesIO(sample(8 * MiB))
    reader = encrypting_reader(src, **dk)
    assert src.tell() == 0
    assert len(reader.read(100)) == 100
    assert src.tell() <= 2 * CHUNK_SIZE


def test_short_reads_from_source(dk: dict[str, Any]) -> None:
    data = sample(2 * CHUNK_SIZE + 5)
    stored = encrypting_reader(Trickle(data, step=4093), **dk).read()  # type: ignore[arg-type]
    assert len(split(stored, dk)[1]) == 3  # full-size chunks despite short reads
    assert decrypting_reader(Trickle(stored, step=4093), **dk).read() == data  # type: ignore[arg-type]


def test_decrypt_to_file_and_stream(dk: dict[str, Any], tmp_path: Path) -> None:
    data = sample(CHUNK_SIZE + 10)
    stored = encrypt(data, dk)
    assert decrypt_to_file(io.BytesIO(stored), tmp_path / "out.tar", **dk) == len(data)
    assert (tmp_path / "out.tar").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "out.tar"]
    buf = io.BytesIO()
    assert decrypt_stream(io.BytesIO(stored), buf, **dk) == len(data) and buf.getvalue() == data


# ---------------------------------------------------------------- streams: fail closed


def test_decrypt_to_missing_directory_is_a_clear_error(dk: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(BackupToolsError, match="could not write .*nowhere/out.*check the directory"):
        decrypt_to_file(io.BytesIO(encrypt(b"x", dk)), tmp_path / "nowhere" / "out", **dk)


def test_wrong_data_key_raises_before_any_output_and_leaves_no_file(dk: dict[str, Any], tmp_path: Path) -> None:
    stored = encrypt(sample(3 * MiB), dk)
    wrong = dk | {"data_key": os.urandom(32)}
    with pytest.raises(EncryptionKeyError, match="does not open this object"):
        decrypting_reader(io.BytesIO(stored), **wrong)  # at open, before any read
    out = tmp_path / "restore"
    out.mkdir()
    with pytest.raises(EncryptionKeyError):
        decrypt_to_file(io.BytesIO(stored), out / "base.tar", **wrong)
    assert_nothing_left(out)


def test_wrong_key_file_end_to_end_leaves_no_file(envelope, tmp_path: Path) -> None:
    _, data_key, meta = envelope
    repo = FileRepository(tmp_path / "repo")
    kw = {"data_key": data_key, "key_id": meta["data_key_id"], "backup_id": BACKUP, "object_name": OBJECT}
    repo.put_stream(f"backups/{BACKUP}/{OBJECT}", encrypting_reader(io.BytesIO(sample(MiB)), **kw))
    (tmp_path / "wrong.key").write_text(generate_key_file_text())
    out = tmp_path / "restore"
    out.mkdir()
    with pytest.raises(EncryptionKeyError, match="backup encrypted with key id"):
        key = unwrap_data_key(meta, wrapper_for(meta, key_file=tmp_path / "wrong.key"))
        decrypt_to_file(repo.open_read(f"backups/{BACKUP}/{OBJECT}"), out / "base.tar", **(kw | {"data_key": key}))
    assert_nothing_left(out)


def test_data_key_id_mismatch_names_both(dk: dict[str, Any]) -> None:
    stored = encrypt(b"x", dk)
    with pytest.raises(EncryptionKeyError, match=f"data key {dk['key_id']}, the catalog gives dk-other"):
        decrypting_reader(io.BytesIO(stored), **(dk | {"key_id": "dk-other"}))


@pytest.mark.parametrize("chunk", [0, 1, -1], ids=["first", "middle", "last"])
@pytest.mark.parametrize("where", [0, NONCE + 5, -1], ids=["nonce", "ciphertext", "tag"])
def test_bit_flip_in_any_chunk(dk: dict[str, Any], tmp_path: Path, chunk: int, where: int) -> None:
    data = sample(2 * CHUNK_SIZE + 100)
    header, records = split(encrypt(data, dk), dk)
    rec = bytearray(records[chunk])
    rec[where] ^= 0x01
    records[chunk] = bytes(rec)
    dest = tmp_path / "out.tar"
    dest.write_bytes(b"previous restore")
    with pytest.raises(IntegrityCheckFailed, match=f"chunk {chunk % 3} failed authentication"):
        decrypt_to_file(io.BytesIO(header + b"".join(records)), dest, **dk)
    assert dest.read_bytes() == b"previous restore"  # untouched, and no temp file beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "out.tar"]


def test_bit_flip_anywhere_in_header_fails_closed(dk: dict[str, Any]) -> None:
    data = sample(1000)
    stored = encrypt(data, dk)
    for offset in range(header_len(dk)):
        bad = bytearray(stored)
        bad[offset] ^= 0x80
        with pytest.raises((IntegrityCheckFailed, EncryptionKeyError)):
            decrypt(bytes(bad), dk)


def test_reader_releases_only_verified_chunks(dk: dict[str, Any]) -> None:
    data = sample(3 * CHUNK_SIZE)
    header, records = split(encrypt(data, dk), dk)
    records[1] = records[1][:-1] + bytes([records[1][-1] ^ 1])
    reader, got = decrypting_reader(io.BytesIO(header + b"".join(records)), **dk), bytearray()
    with pytest.raises(IntegrityCheckFailed, match="chunk 1"):
        while piece := reader.read(4096):
            got += piece
    assert bytes(got) == data[:CHUNK_SIZE]


@pytest.mark.parametrize(
    "cut",
    ["drop-last-chunk", "half-of-last-chunk", "last-byte", "header-only", "inside-header", "empty"],
)
def test_truncation_is_detected(dk: dict[str, Any], cut: str) -> None:
    data = sample(2 * CHUNK_SIZE + 100)
    stored = encrypt(data, dk)
    header, records = split(stored, dk)
    truncated = {
        "drop-last-chunk": header + b"".join(records[:-1]),
        "half-of-last-chunk": header + b"".join(records[:-1]) + records[-1][: len(records[-1]) // 2],
        "last-byte": stored[:-1],
        "header-only": header,
        "inside-header": header[:10],
        "empty": b"",
    }[cut]
    with pytest.raises(IntegrityCheckFailed):
        decrypt(truncated, dk)


def test_truncation_at_a_chunk_boundary_of_an_exact_multiple(dk: dict[str, Any]) -> None:
    header, records = split(encrypt(sample(2 * CHUNK_SIZE), dk), dk)
    assert len(records) == 2  # the last full chunk carries the final flag; no empty trailer
    with pytest.raises(IntegrityCheckFailed, match="chunk 0"):
        decrypt(header + records[0], dk)


def test_trailing_data_is_rejected(dk: dict[str, Any]) -> None:
    stored = encrypt(sample(100), dk)
    with pytest.raises(IntegrityCheckFailed):
        decrypt(stored + b"\0" * 40, dk)


def test_swapped_or_repeated_chunks_fail(dk: dict[str, Any]) -> None:
    header, records = split(encrypt(sample(3 * CHUNK_SIZE + 1), dk), dk)
    a, b, c, d = records
    for order in ([b, a, c, d], [a, c, b, d], [a, a, c, d], [a, b, c, c, d]):
        with pytest.raises(IntegrityCheckFailed):
            decrypt(header + b"".join(order), dk)


@pytest.mark.parametrize(
    "other",
    [{"object_name": "base/other.tar"}, {"backup_id": "20240102T000000-full"}],
    ids=["object-A-as-B", "other-backup"],
)
def test_object_presented_under_another_name_fails(dk: dict[str, Any], other: dict[str, str]) -> None:
    stored = encrypt(sample(10), dk)
    with pytest.raises(IntegrityCheckFailed, match="chunk 0 failed authentication"):
        decrypt(stored, dk | other)


def test_chunk_spliced_from_another_encryption_of_the_same_object_fails(dk: dict[str, Any]) -> None:
    data = sample(2 * CHUNK_SIZE + 1)
    header1, records1 = split(encrypt(data, dk), dk)
    _, records2 = split(encrypt(data, dk), dk)
    with pytest.raises(IntegrityCheckFailed, match="chunk 1"):
        decrypt(header1 + records1[0] + records2[1] + records1[2], dk)


# ---------------------------------------------------------------- composition with compression and a repository


def test_compress_then_encrypt_through_a_repository(dk: dict[str, Any], tmp_path: Path) -> None:
    data = b"".join(b"%08d,customer-%d,2024-01-01\n" % (i, i % 97) for i in range(200_000))
    repo = FileRepository(tmp_path / "repo")
    key = f"backups/{BACKUP}/{OBJECT}.zst"
    info = repo.put_stream(key, encrypting_reader(compressing_reader(io.BytesIO(data), codec="zstd"), **dk))
    assert info.size < len(data) // 5  # compressed before encryption (ciphertext does not compress)
    with repo.open_read(key, sha256=info.sha256, size=info.size) as raw:
        restored = decompressing_reader(decrypting_reader(raw, **dk), codec="zstd").read()
    assert restored == data


# ---------------------------------------------------------------- AWS KMS on a real moto server over HTTP


@pytest.fixture(scope="session")
def kms_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """The shared moto server (fixtures/s3.py) when it is running locally, else one of our own."""
    try:
        s3 = request.getfixturevalue("s3")
    except pytest.FixtureLookupError:
        s3 = None
    if s3 is not None and s3.is_moto:
        yield s3.endpoint
        return
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def kms_client_for(endpoint: str) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="pgdrill-moto",
        aws_secret_access_key="pgdrill-moto",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )


@pytest.fixture
def kms(kms_endpoint: str) -> tuple[Any, str]:
    """A KMS client on the moto server and the ARN of a new symmetric key."""
    client = kms_client_for(kms_endpoint)
    arn = client.create_key(Description="pgdrill test backup key")["KeyMetadata"]["Arn"]
    return client, arn


def test_kms_round_trip(kms: tuple[Any, str], tmp_path: Path) -> None:
    client, arn = kms
    alias = f"alias/pgdrill-{os.urandom(4).hex()}"
    client.create_alias(AliasName=alias, TargetKeyId=arn)
    data_key, meta = new_data_key(KmsKey(alias, client=client))
    assert (meta["wrapping"], meta["key_id"]) == ("aws-kms", arn)  # the ARN is recorded, not the alias
    kw = {"key_id": meta["data_key_id"], "backup_id": BACKUP, "object_name": OBJECT}
    data = sample(CHUNK_SIZE + 1)
    stored = encrypt(data, kw | {"data_key": data_key})
    restored_key = unwrap_data_key(meta, wrapper_for(meta, kms_client=client))  # found by key id: no key file
    assert restored_key == data_key
    assert decrypt_to_file(io.BytesIO(stored), tmp_path / "out", data_key=restored_key, **kw) == len(data)
    assert (tmp_path / "out").read_bytes() == data


def test_rotation_key_file_to_kms_and_back(kms: tuple[Any, str], envelope, tmp_path: Path) -> None:
    client, arn = kms
    local, data_key, meta = envelope
    kw = {"data_key": data_key, "key_id": meta["data_key_id"], "backup_id": BACKUP, "object_name": OBJECT}
    stored = encrypt(b"old backup", kw)

    to_kms = rewrap(meta, local, KmsKey(arn, client=client))
    assert (to_kms["wrapping"], to_kms["key_id"], to_kms["data_key_id"]) == ("aws-kms", arn, meta["data_key_id"])
    with pytest.raises(EncryptionKeyError, match="aws-kms key id .* you gave a keyfile key"):
        unwrap_data_key(to_kms, local)
    assert unwrap_data_key(to_kms, wrapper_for(to_kms, kms_client=client)) == data_key

    (tmp_path / "next.key").write_text(generate_key_file_text())
    back = rewrap(to_kms, KmsKey(client=client), load_key_file(tmp_path / "next.key"))
    assert back["wrapping"] == "keyfile" and back["key_id"] not in (meta["key_id"], arn)
    key = unwrap_data_key(back, wrapper_for(back, key_file=tmp_path / "next.key"))
    assert decrypt(stored, kw | {"data_key": key}) == b"old backup"


def test_kms_key_missing_from_this_account_or_region_is_a_key_error(kms: tuple[Any, str]) -> None:
    client, arn = kms
    _, meta = new_data_key(KmsKey(arn, client=client))
    gone = arn.rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000"
    with pytest.raises(EncryptionKeyError, match=f"KMS key {re.escape(gone)}: .*does not exist") as info:
        unwrap_data_key(meta | {"key_id": gone}, KmsKey(client=client))
    assert info.value.exit_code == 3


def test_kms_blob_of_another_kms_key_is_a_key_error(kms: tuple[Any, str]) -> None:
    client, arn = kms
    other = client.create_key(Description="another key")["KeyMetadata"]["Arn"]
    _, meta = new_data_key(KmsKey(arn, client=client))
    with pytest.raises(EncryptionKeyError, match=f"KMS key {re.escape(other)}: access .* denied"):
        unwrap_data_key(meta | {"key_id": other}, KmsKey(client=client))


def test_kms_refuses_metadata_moved_to_another_data_key_id(kms: tuple[Any, str]) -> None:
    client, arn = kms
    _, meta = new_data_key(KmsKey(arn, client=client))
    with pytest.raises(EncryptionKeyError, match="KMS refused the wrapped data key"):
        unwrap_data_key(meta | {"data_key_id": "dk-0000000000000000"}, KmsKey(client=client))


def test_kms_unreachable_is_a_key_error() -> None:
    client = kms_client_for("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(EncryptionKeyError, match="could not use KMS key .*check AWS region, endpoint"):
        new_data_key(KmsKey("alias/pgdrill", client=client))


def test_kms_needs_a_key_id_to_encrypt(kms: tuple[Any, str]) -> None:
    client, _ = kms
    with pytest.raises(UsageError, match="KMS key id"):
        new_data_key(KmsKey(client=client))
