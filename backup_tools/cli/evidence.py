"""The `backup-tools evidence` verbs: verify a drill evidence bundle, generate a signing key."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from backup_tools.errors import UsageError
from backup_tools.security.evidence import generate_key, load_public_key, verify_bundle

PUBLIC_KEY_ENV = "PGDRILL_EVIDENCE_PUBLIC_KEY"


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify one bundle: 0 intact (and validly signed if signed), 1 tampered/missing/extra/bad signature."""
    key_path = args.public_key or os.environ.get(PUBLIC_KEY_ENV)
    public_key = None
    if key_path:
        try:
            data = Path(key_path).read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read public key {key_path}: {e.strerror}") from e
        public_key = load_public_key(data, source=key_path)
    result = verify_bundle(Path(args.bundle), public_key=public_key)
    for problem in result.problems:
        print(problem)
    if not result.ok:
        names = ", ".join(sorted({p.path for p in result.problems}))
        print(f"backup-tools evidence verify: FAILED: {args.bundle}: {names}; do not rely on this evidence, "
              "regenerate it from the run or get the original bundle", file=sys.stderr)  # fmt: skip
        return 1
    if not result.signed:
        how = "NOT signed: this only detects accidental corruption (configure --evidence-key to sign)"
    elif result.key_source == "given":
        how = f"signature valid (Ed25519 key {result.key_id})"
    else:
        how = (f"signature valid against the key embedded in the bundle ({result.key_id}); "
               "pass --public-key to prove who signed it")  # fmt: skip
    print(f"OK {args.bundle}: {result.files} files match the manifest; {how}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a new Ed25519 signing key and its public key."""
    public = generate_key(Path(args.out))
    print(f"wrote private key {args.out} (keep it secret) and public key {public} (give it to verifiers)")
    return 0


def add_evidence_parser(verbs: argparse._SubParsersAction) -> None:
    """Add `evidence verify` and `evidence keygen` to the backup-tools parser."""
    evidence = verbs.add_parser("evidence", help="verify drill evidence bundles", description="Drill evidence bundles.")
    sub = evidence.add_subparsers(dest="evidence_verb", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="check every file's sha256 and the Ed25519 signature of a bundle",
                            description="Check every file's sha256 and the signature; exit 0 intact, 1 not, 2 bad input.")  # fmt: skip
    verify.add_argument("bundle", metavar="BUNDLE", help="a run directory (reports/out/<run>) or its .tar.gz")
    verify.add_argument("--public-key", metavar="FILE", help=f"trusted signer's public key (default ${PUBLIC_KEY_ENV})")
    verify.set_defaults(func=cmd_verify)
    keygen = sub.add_parser("keygen", help="create an Ed25519 key for signing bundles (--evidence-key)")
    keygen.add_argument("--out", required=True, metavar="FILE", help="private key file to create (FILE.pub too)")
    keygen.set_defaults(func=cmd_keygen)
