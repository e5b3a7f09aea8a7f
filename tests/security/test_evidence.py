"""Evidence bundles: manifest, Ed25519 signature, and `backup-tools evidence verify` naming any tampered file."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backup_tools.cli.main import main
from backup_tools.errors import UsageError
from backup_tools.security.evidence import (
    MANIFEST,
    SIGNATURE,
    load_private_key,
    load_public_key,
    pack,
    verify_bundle,
    write_manifest,
)

FILES = {
    "report.html": b"<html><body><table id='pgdrill-summary'></table></body></html>\n",
    "drill-results.json": b'{"schema_version": 1, "drills": []}\n',
    "logs/test_a/primary/server.log": b"LOG:  database system is ready to accept connections\n",
}


def make_bundle(root: Path, *, key: Ed25519PrivateKey | None) -> Path:
    bundle = root / "20260101T000000Z-1"
    for rel, data in FILES.items():
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_bytes(data)
    write_manifest(bundle, run_id=bundle.name, signing_key=key)
    return bundle


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def public_key_file(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "signer.pub"
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def flip_byte(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    data[index % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def test_untampered_signed_bundle_verifies_against_the_given_key(tmp_path, key, public_key_file, capsys):
    bundle = make_bundle(tmp_path, key=key)
    assert main(["evidence", "verify", str(bundle), "--public-key", str(public_key_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK {bundle}: 3 files match the manifest; signature valid")
    result = verify_bundle(bundle, public_key=load_public_key(public_key_file.read_bytes(), source="k"))
    assert result.ok and result.signed and result.key_source == "given" and result.files == 3


@pytest.mark.parametrize("rel", [*FILES, MANIFEST, SIGNATURE])
@pytest.mark.parametrize("where", [0, 17, -1])
def test_one_flipped_byte_in_any_file_fails_naming_it(tmp_path, key, public_key_file, capsys, rel, where):
    bundle = make_bundle(tmp_path, key=key)
    flip_byte(bundle / rel, where)
    assert main(["evidence", "verify", str(bundle), "--public-key", str(public_key_file)]) == 1
    captured = capsys.readouterr()
    assert rel in captured.out, captured.out
    assert "FAILED" in captured.err and rel in captured.err


@pytest.mark.parametrize("rel", list(FILES))
def test_one_flipped_byte_fails_even_without_a_trusted_key(tmp_path, key, rel):
    bundle = make_bundle(tmp_path, key=key)
    flip_byte(bundle / rel, 5)
    result = verify_bundle(bundle)
    assert [(p.kind, p.path) for p in result.problems] == [("tampered", rel)]


def test_missing_and_extra_files_are_named(tmp_path, key):
    bundle = make_bundle(tmp_path, key=key)
    (bundle / "logs/test_a/primary/server.log").unlink()
    (bundle / "notes.txt").write_text("added later\n")
    problems = {(p.kind, p.path) for p in verify_bundle(bundle).problems}
    assert problems == {("missing", "logs/test_a/primary/server.log"), ("extra", "notes.txt")}


def test_a_bundle_re_signed_by_another_key_fails_against_the_trusted_key(tmp_path, key, public_key_file):
    bundle = make_bundle(tmp_path, key=key)
    (bundle / "report.html").write_text("forged\n")
    write_manifest(bundle, run_id=bundle.name, signing_key=Ed25519PrivateKey.generate())
    assert verify_bundle(bundle).ok  # consistent with its embedded key, which proves nothing about who signed
    trusted = load_public_key(public_key_file.read_bytes(), source="trusted")
    assert [p.kind for p in verify_bundle(bundle, public_key=trusted).problems] == ["signature"]


def test_removing_the_signature_is_detected(tmp_path, key, public_key_file):
    bundle = make_bundle(tmp_path, key=key)
    (bundle / SIGNATURE).unlink()
    assert [(p.kind, p.path) for p in verify_bundle(bundle).problems] == [("missing", SIGNATURE)]


def test_unsigned_bundle_verifies_but_says_so_and_fails_when_a_key_is_required(tmp_path, public_key_file, capsys):
    bundle = make_bundle(tmp_path, key=None)
    assert not (bundle / SIGNATURE).exists()
    assert main(["evidence", "verify", str(bundle)]) == 0
    assert "NOT signed" in capsys.readouterr().out
    assert main(["evidence", "verify", str(bundle), "--public-key", str(public_key_file)]) == 1
    flip_byte(bundle / "drill-results.json", 3)
    assert main(["evidence", "verify", str(bundle)]) == 1


def test_archive_verifies_and_a_changed_member_is_named(tmp_path, key, public_key_file, capsys):
    bundle = make_bundle(tmp_path, key=key)
    archive = pack(bundle, tmp_path / f"{bundle.name}.tar.gz")
    assert main(["evidence", "verify", str(archive), "--public-key", str(public_key_file)]) == 0
    forged = tmp_path / "forged.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(forged, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith("drill-results.json"):
                data = data.replace(b"[]", b"[1]")
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    capsys.readouterr()
    assert main(["evidence", "verify", str(forged), "--public-key", str(public_key_file)]) == 1
    assert "TAMPERED drill-results.json" in capsys.readouterr().out


def test_corrupt_archive_fails_naming_the_archive(tmp_path, key):
    archive = pack(make_bundle(tmp_path, key=key), tmp_path / "bundle.tar.gz")
    flip_byte(archive, 200)
    result = verify_bundle(archive)
    assert not result.ok and archive.name in {p.path for p in result.problems}


def test_bad_input_exits_2(tmp_path, capsys):
    assert main(["evidence", "verify", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bundle = make_bundle(tmp_path, key=None)
    (tmp_path / "bad.pub").write_text("not a key\n")
    assert main(["evidence", "verify", str(bundle), "--public-key", str(tmp_path / "bad.pub")]) == 2


def test_keygen_writes_a_private_key_only_its_owner_reads_and_refuses_to_overwrite(tmp_path, capsys):
    key_path = tmp_path / "evidence.pem"
    assert main(["evidence", "keygen", "--out", str(key_path)]) == 0
    assert key_path.stat().st_mode & 0o777 == 0o600
    private = load_private_key(key_path.read_bytes(), source=str(key_path))
    public = load_public_key(Path(f"{key_path}.pub").read_bytes(), source="pub")
    assert public.public_bytes_raw() == private.public_key().public_bytes_raw()
    before = key_path.read_bytes()
    assert main(["evidence", "keygen", "--out", str(key_path)]) == 2
    assert key_path.read_bytes() == before


def test_raw_base64_and_openssh_keys_are_accepted_and_other_keys_refused():
    key = Ed25519PrivateKey.generate()
    raw = base64.b64encode(key.private_bytes_raw())
    assert load_private_key(raw, source="raw").public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    ssh = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert load_public_key(ssh, source="ssh").public_bytes_raw() == key.public_key().public_bytes_raw()
    with pytest.raises(UsageError, match="not an unencrypted Ed25519 private key"):
        load_private_key(b"c2hvcnQ=", source="short")
