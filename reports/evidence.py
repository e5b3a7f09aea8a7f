"""The run's evidence bundle: the run directory with report, results, logs, a sha256 manifest, optionally signed."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backup_tools.errors import UsageError
from backup_tools.security.evidence import key_id, load_private_key, pack, write_manifest

KEY_ENV = "PGDRILL_EVIDENCE_KEY"
HISTORY_EXCERPT = "history-excerpt.jsonl"
SUMMARY = "evidence-summary.json"


@dataclass(frozen=True)
class Bundle:
    """Where the bundle is, and how it was signed."""

    directory: Path
    manifest: Path
    archive: Path | None
    key_id: str | None


def load_signing_key(option: str | None) -> Ed25519PrivateKey | None:
    """Read the signing key named by --evidence-key or $PGDRILL_EVIDENCE_KEY (read early, before privileges drop)."""
    path = option or os.environ.get(KEY_ENV)
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the evidence signing key {path}: {e.strerror}; "
                         "create one with 'backup-tools evidence keygen --out FILE'") from e  # fmt: skip
    return load_private_key(data, source=path)


def write_history_excerpt(run_dir: Path, lines: list[dict[str, Any]]) -> Path:
    """The history lines the trends were drawn from, so the bundle shows its own evidence for them."""
    path = run_dir / HISTORY_EXCERPT
    path.write_text("".join(json.dumps(line, default=str) + "\n" for line in lines))
    return path


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What this bundle evidences: drills per data source and family, the controls evidenced (team data only) and those
    only exercised on synthetic data, and every team source restored."""
    recovery = [r for r in records if r.get("family") != "fault-detection"]
    evidenced = sorted({c for r in recovery for c in r.get("evidences") or []})
    exercised = sorted({c for r in recovery if r.get("verdict") == "pass" for c in r.get("controls") or []}
                       - set(evidenced))  # fmt: skip
    sources = [{**(r.get("source") or {}), "data_source": r.get("data_source"), "test": r.get("test"),
                "verdict": r.get("verdict")} for r in recovery if r.get("source")]  # fmt: skip
    count = {"recovery": {}, "fault-detection": {}}
    for r in records:
        family = "fault-detection" if r.get("family") == "fault-detection" else "recovery"
        key = f"{r.get('data_source') or 'synthetic'}/{r.get('verdict')}"
        count[family][key] = count[family].get(key, 0) + 1
    return {"drills": count, "controls_evidenced": evidenced, "controls_exercised_on_synthetic_data_only": exercised,
            "team_sources": sources,
            "statement": ("evidences " + ", ".join(evidenced)) if evidenced else
            "evidences no compliance control: no passing recovery drill restored the team's backups or database"}  # fmt: skip


def write_summary(run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Write evidence-summary.json (hashed and signed with the rest of the bundle)."""
    summary = summarize(records)
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def finish_bundle(run_dir: Path, *, run_id: str, key: Ed25519PrivateKey | None, archive: bool) -> Bundle:
    """Write the manifest (signed when a key is configured) and, if asked, a .tar.gz beside the run directory."""
    manifest = write_manifest(run_dir, run_id=run_id, signing_key=key)
    tarball = pack(run_dir, run_dir.with_name(run_dir.name + ".tar.gz")) if archive else None
    return Bundle(run_dir, manifest, tarball, key_id(key.public_key()) if key else None)
