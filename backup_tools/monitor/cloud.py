"""Managed databases' own backup settings: AWS RDS instances and Aurora clusters against the team's expectations.

The expectations come from a TOML file ([cloud] provider = "aws-rds", regions, [cloud.expect] and per-resource
[cloud.resources.<id>] overrides). Each instance or cluster gets one line per setting: retention days, PITR,
backup window inside the allowed hours, cross-region automated-backup replication, encryption, deletion
protection. Only AWS RDS/Aurora is implemented; other providers are a usage error (docs/compliance.md says
what they would need).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backup_tools.errors import BackupToolsError, UsageError

KEYS = ("retention_days", "pitr", "backup_window", "cross_region_replication", "encrypted", "deletion_protection")


@dataclass(frozen=True)
class CloudConfig:
    """What the team expects of its managed databases."""

    regions: tuple[str, ...]
    expect: dict[str, Any]
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    include: tuple[str, ...] = ("*",)

    def for_resource(self, ident: str) -> dict[str, Any]:
        """The expectations of one instance or cluster (its overrides on top of [cloud.expect])."""
        return {**self.expect, **self.resources.get(ident, {})}


def load_cloud_config(path: Path) -> CloudConfig:
    """Read and validate [cloud] (or [tool.pgdrill.cloud]) from a TOML file."""
    from backup_tools.config import load_pgdrill_section

    doc = load_pgdrill_section(path, "cloud", what="cloud config")
    if not doc:
        raise UsageError(f"{path} has no [cloud] table: add provider, regions and [cloud.expect]")
    provider = doc.get("provider", "aws-rds")
    if provider != "aws-rds":
        raise UsageError(
            f"cloud provider {provider!r} is not supported: only aws-rds (RDS and Aurora) is checked; "
            "see docs/compliance.md for what Cloud SQL, Azure and Neon would need"
        )
    regions = doc.get("regions")
    if not regions or not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise UsageError('[cloud] regions must be a list of AWS regions, e.g. regions = ["eu-central-1"]')
    resources = doc.get("resources", {})
    for table in [doc.get("expect", {}), *resources.values()]:
        _check_expect(table)
    return CloudConfig(tuple(regions), dict(doc.get("expect", {})), {k: dict(v) for k, v in resources.items()},
                       tuple(doc.get("include", ["*"])))  # fmt: skip


def _check_expect(table: Mapping[str, Any]) -> None:
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise UsageError(f"unknown cloud expectation(s) {', '.join(unknown)}: use {', '.join(KEYS)}")
    days = table.get("retention_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 35):
        raise UsageError(f"retention_days = {days!r}: RDS keeps automated backups 0..35 days")
    if "backup_window" in table:
        _window(table["backup_window"])
    for key in ("pitr", "cross_region_replication", "encrypted", "deletion_protection"):
        if key in table and not isinstance(table[key], bool):
            raise UsageError(f"{key} = {table[key]!r}: use true or false")


def _window(text: str) -> tuple[int, int]:
    """'hh:mm-hh:mm' (UTC) as minutes since midnight."""
    try:
        start, end = (int(p[:2]) * 60 + int(p[3:5]) for p in str(text).split("-"))
    except ValueError as e:
        raise UsageError(f"backup window {text!r}: use hh:mm-hh:mm in UTC, e.g. '01:00-04:00'") from e
    return start, end


def _inside(window: str, allowed: str) -> bool:
    (s, e), (a, b) = _window(window), _window(allowed)
    minutes = {m % 1440 for m in range(s, e + (1440 if e < s else 0) + 1)}
    allowed_minutes = {m % 1440 for m in range(a, b + (1440 if b < a else 0) + 1)}
    return minutes <= allowed_minutes


@dataclass(frozen=True)
class Finding:
    """One setting of one database: ok or not, and one line."""

    resource: str
    setting: str
    ok: bool
    message: str

    def line(self) -> str:
        """As `cloud-check` prints it."""
        return f"{'OK' if self.ok else 'CRITICAL':8} {self.resource} {self.setting}: {self.message}"


def judge(ident: str, facts: dict[str, Any], expect: dict[str, Any]) -> list[Finding]:
    """Compare one database's backup settings (normalised facts) with its expectations."""
    out = []
    if (want := expect.get("retention_days")) is not None:
        got = facts["retention_days"]
        out.append(
            Finding(ident, "retention", got >= want, f"automated backups kept {got} d (at least {want} d expected)")
        )
    if (want := expect.get("pitr")) is not None:
        on = facts["retention_days"] > 0
        out.append(Finding(ident, "pitr", on == want, "point-in-time restore " + ("on" if on else "off (retention 0)")
                           + ("" if on == want else f", expected {'on' if want else 'off'}")))  # fmt: skip
    if (want := expect.get("backup_window")) is not None:
        got = facts["backup_window"] or "none"
        ok = got != "none" and _inside(got, want)
        out.append(Finding(ident, "backup window", ok, f"{got} UTC" + ("" if ok else f", outside the allowed {want}")))
    if (want := expect.get("cross_region_replication")) is not None:
        got = facts["replicated_to"]
        ok = bool(got) == want
        say = (
            f"automated backups replicated to {', '.join(got)}"
            if got
            else "no cross-region automated-backup replication"
        )
        out.append(Finding(ident, "cross-region", ok, say + ("" if ok else f", expected {'on' if want else 'off'}")))
    for key, name in (("encrypted", "encryption"), ("deletion_protection", "deletion protection")):
        if (want := expect.get(key)) is not None:
            got = bool(facts[key])
            out.append(Finding(ident, name, got == want, ("on" if got else "off")
                               + ("" if got == want else f", expected {'on' if want else 'off'}")))  # fmt: skip
    return out


def _rds_facts(kind: str, db: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ident = db["DBClusterIdentifier"] if kind == "cluster" else db["DBInstanceIdentifier"]
    replications = db.get("DBInstanceAutomatedBackupsReplications") or []
    return f"{kind} {ident}", {
        "retention_days": int(db.get("BackupRetentionPeriod") or 0),
        "backup_window": db.get("PreferredBackupWindow"),
        "replicated_to": [r.get("DBInstanceAutomatedBackupsArn", "?").split(":")[3] for r in replications],
        "encrypted": db.get("StorageEncrypted", False),
        "deletion_protection": db.get("DeletionProtection", False),
    }


def check_rds(config: CloudConfig, *, endpoint_url: str | None = None) -> list[Finding]:
    """Describe every RDS instance (not an Aurora member: its cluster holds the settings) and Aurora cluster."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    findings: list[Finding] = []
    for region in config.regions:
        client = boto3.client("rds", region_name=region, endpoint_url=endpoint_url)
        try:
            instances = [d for page in client.get_paginator("describe_db_instances").paginate()
                         for d in page["DBInstances"] if not d.get("DBClusterIdentifier")]  # fmt: skip
            clusters = [
                c for page in client.get_paginator("describe_db_clusters").paginate() for c in page["DBClusters"]
            ]
        except (BotoCoreError, ClientError) as e:
            raise BackupToolsError(f"could not describe RDS in {region}: {e}; check credentials and the region") from e
        for kind, db in [("instance", d) for d in instances] + [("cluster", c) for c in clusters]:
            label, facts = _rds_facts(kind, db)
            ident = label.split(" ", 1)[1]
            if any(fnmatch.fnmatchcase(ident, pattern) for pattern in config.include):
                findings += judge(f"{region}/{label}", facts, config.for_resource(ident))
    return findings
