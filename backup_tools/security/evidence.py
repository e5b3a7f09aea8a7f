"""Drill evidence bundles: a sha256 manifest of every file, signed with Ed25519, and its verification."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from backup_tools.errors import UsageError
from backup_tools.streams import sha256_of

FORMAT = "pgdrill-evidence-bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"


@dataclass(frozen=True)
class Problem:
    """One way a bundle differs from its manifest: tampered, missing, extra, unsafe or signature."""

    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.upper()} {self.path}: {self.detail}"


@dataclass
class Verification:
    """The outcome of verifying a bundle."""

    bundle: str
    files: int = 0
    signed: bool = False
    key_id: str | None = None
    key_source: str | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every hash matched and any signature is valid."""
        return not self.problems


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of sha256 of its raw bytes."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private_key(data: bytes, *, source: str) -> Ed25519PrivateKey:
    """Parse an Ed25519 private key: PEM (openssl genpkey -algorithm ed25519) or 32 raw bytes in base64."""
    try:
        if b"BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError) as e:
        raise UsageError(f"{source} is not an unencrypted Ed25519 private key ({e}); create one with "
                         "'backup-tools evidence keygen --out KEY'") from e  # fmt: skip
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(
            f"{source} holds a {type(key).__name__}, not an Ed25519 key; use 'openssl genpkey -algorithm ed25519'"
        )
    return key


def load_public_key(data: bytes, *, source: str) -> Ed25519PublicKey:
    """Parse an Ed25519 public key: PEM, OpenSSH 'ssh-ed25519 ...' or 32 raw bytes in base64."""
    try:
        if b"BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        elif data.startswith(b"ssh-ed25519"):
            key = serialization.load_ssh_public_key(data.strip())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError) as e:
        raise UsageError(
            f"{source} is not an Ed25519 public key ({e}); use the .pub file 'evidence keygen' wrote"
        ) from e
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{source} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def generate_key(path: Path) -> Path:
    """Write a new Ed25519 private key (PEM, mode 0600) to path and its public key to path + '.pub'."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise UsageError(f"{path} exists; refusing to overwrite a signing key, choose another path") from e
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = Path(f"{path}.pub")
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return public


def _bundle_files(bundle: Path) -> Iterator[tuple[str, Path]]:
    for root, dirs, files in os.walk(bundle):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            yield path.relative_to(bundle).as_posix(), path


def write_manifest(bundle: Path, *, run_id: str, signing_key: Ed25519PrivateKey | None = None) -> Path:
    """Hash every file of the bundle directory into manifest.json and, given a key, sign it into manifest.sig."""
    entries = []
    for rel, path in _bundle_files(bundle):
        if rel in (MANIFEST, SIGNATURE):
            continue
        size, sha = sha256_of(path)
        entries.append({"path": rel, "size": size, "sha256": sha})
    signature = None
    if signing_key is not None:
        public = signing_key.public_key()
        signature = {
            "algorithm": "Ed25519",
            "public_key": base64.b64encode(_raw_public(public)).decode(),
            "key_id": key_id(public),
        }
    doc = {"format": FORMAT, "run_id": run_id, "created_at": datetime.now(UTC).isoformat(), "files": entries,
           "signature": signature}  # fmt: skip
    body = (json.dumps(doc, indent=2) + "\n").encode()
    (bundle / MANIFEST).write_bytes(body)
    (bundle / SIGNATURE).unlink(missing_ok=True)
    if signing_key is not None:
        (bundle / SIGNATURE).write_bytes(base64.b64encode(signing_key.sign(body)) + b"\n")
    return bundle / MANIFEST


def pack(bundle: Path, archive: Path) -> Path:
    """Write the bundle directory as a .tar.gz whose single top directory is the bundle's name."""
    with tarfile.open(archive, "w:gz") as tar:
        for rel, path in _bundle_files(bundle):
            tar.add(path, arcname=f"{bundle.name}/{rel}", recursive=False)
    return archive


def _read_directory(bundle: Path) -> tuple[dict[str, tuple[str, int]], dict[str, bytes], list[Problem]]:
    hashes, special, problems = {}, {}, []
    for rel, path in _bundle_files(bundle):
        if path.is_symlink() or not path.is_file():
            problems.append(Problem("unsafe", rel, "not a regular file (symlink or device); bundles hold plain files"))
        elif rel in (MANIFEST, SIGNATURE):
            special[rel] = path.read_bytes()
        else:
            size, sha = sha256_of(path)
            hashes[rel] = (sha, size)
    return hashes, special, problems


def _read_archive(archive: Path) -> tuple[dict[str, tuple[str, int]], dict[str, bytes], list[Problem]]:
    hashes, special, problems = {}, {}, []
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers() if not m.isdir()]
            tops = {PurePosixPath(m.name).parts[0] for m in members}
            strip = len(tops) == 1 and all(len(PurePosixPath(m.name).parts) > 1 for m in members)
            for m in members:
                rel = "/".join(PurePosixPath(m.name).parts[1 if strip else 0 :])
                if not m.isfile() or ".." in PurePosixPath(m.name).parts or m.name.startswith("/"):
                    problems.append(Problem("unsafe", rel, "not a plain relative file in the archive"))
                    continue
                data = tar.extractfile(m).read()
                if rel in (MANIFEST, SIGNATURE):
                    special[rel] = data
                else:
                    hashes[rel] = (hashlib.sha256(data).hexdigest(), len(data))
    except (tarfile.TarError, EOFError, OSError) as e:
        problems.append(Problem("tampered", archive.name, f"the archive cannot be read ({e}); it is corrupt"))
    return hashes, special, problems


def verify_bundle(path: Path, *, public_key: Ed25519PublicKey | None = None) -> Verification:
    """Check every file's sha256 against the manifest, report missing/extra files, and check the signature."""
    if path.is_dir():
        hashes, special, problems = _read_directory(path)
    elif path.is_file():
        hashes, special, problems = _read_archive(path)
    else:
        raise UsageError(f"evidence bundle {path} does not exist; pass a run directory or its .tar.gz")
    result = Verification(bundle=str(path), problems=problems)
    if problems and not hashes and not special:
        return result
    body = special.get(MANIFEST)
    if body is None:
        result.problems.append(
            Problem("missing", MANIFEST, "no manifest; this is not an evidence bundle or it was removed")
        )
        return result
    try:
        manifest = json.loads(body)
        entries = {e["path"]: (e["sha256"], int(e["size"])) for e in manifest["files"]}
        if manifest.get("format") != FORMAT:
            raise ValueError(f"unknown format {manifest.get('format')!r}")
    except (ValueError, KeyError, TypeError) as e:
        result.problems.append(Problem("tampered", MANIFEST, f"not a valid manifest ({e})"))
        return result
    _check_signature(result, body, manifest.get("signature"), special.get(SIGNATURE), public_key)
    for rel, (sha, size) in sorted(entries.items()):
        if rel not in hashes:
            result.problems.append(Problem("missing", rel, "listed in the manifest but not in the bundle"))
        elif hashes[rel] != (sha, size):
            got_sha, got_size = hashes[rel]
            result.problems.append(Problem("tampered", rel, f"sha256 {got_sha[:16]}… size {got_size}, manifest says "
                                                            f"{sha[:16]}… size {size}"))  # fmt: skip
    for rel in sorted(set(hashes) - set(entries)):
        result.problems.append(Problem("extra", rel, "in the bundle but not in the manifest"))
    result.files = len(entries)
    return result


def _check_signature(
    result: Verification, body: bytes, block: object, sig: bytes | None, public_key: Ed25519PublicKey | None
) -> None:
    if block is None and sig is None:
        if public_key is not None:
            result.problems.append(
                Problem("signature", MANIFEST, "the bundle is not signed, but a public key was given")
            )
        return
    result.signed = True
    if sig is None:
        result.problems.append(
            Problem("missing", SIGNATURE, "the manifest names a signing key but the signature is gone")
        )
        return
    key = public_key
    result.key_source = "given"
    if key is None:
        result.key_source = "embedded"
        try:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(block["public_key"]))  # type: ignore[index]
        except (ValueError, TypeError, KeyError) as e:
            result.problems.append(
                Problem("tampered", MANIFEST, f"the signing key in the manifest is unreadable ({e})")
            )
            return
    result.key_id = key_id(key)
    try:
        raw = base64.b64decode(sig.rstrip(b"\n"), validate=True)
        if sig != base64.b64encode(raw) + b"\n":  # one canonical encoding: any changed byte is a mismatch
            raise ValueError("not the canonical base64 of a signature")
        key.verify(raw, body)
    except (InvalidSignature, ValueError):
        result.problems.append(Problem("signature", f"{MANIFEST} or {SIGNATURE}", f"the Ed25519 signature (key "
                                       f"{result.key_id}) does not match: one of the two files was changed"))  # fmt: skip
