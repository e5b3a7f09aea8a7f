"""Repository state as the fault sweeps compare it: good backups' shapes, WAL, bucket backups, key ids; tallies."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from backup_tools.repo.objects import ENVELOPE_MAGIC

BACKUP_ID = re.compile(r"\d{8}T\d{6}Z-(full|incremental|logical|bucket)-[0-9a-f]{4}")
VOLATILE = ("verified_at", "pushed_at", "copied_at", "deleting_at", "start_time", "stop_time", "finished_at",
            "started_at", "id", "lag", "backup_lag_seconds", "wal_lag_seconds")  # fmt: skip


def objects(client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under prefix/ -> its bytes (name relative to the prefix)."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix) + 1 :]] = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def _strip(doc: Any) -> Any:
    """A JSON document without times, lags and ids (which differ between two correct runs)."""
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items()
                if k not in VOLATILE and not k.endswith(("_at", "seconds"))}  # fmt: skip
    if isinstance(doc, list):
        return [_strip(v) for v in doc]
    return BACKUP_ID.sub(lambda m: f"<{m.group(1)}>", doc) if isinstance(doc, str) else doc


def _envelope(body: bytes) -> dict[str, Any] | None:
    """The JSON header of an objstore envelope (WAL objects), or None."""
    if not body.startswith(ENVELOPE_MAGIC):
        return None
    return json.loads(body[len(ENVELOPE_MAGIC) :].split(b"\n", 1)[0])


def repo_state(client: Any, bucket: str, prefix: str, *, exact: bool) -> tuple[dict[str, Any], list[str]]:
    """(normalised state of what a reader relies on, problems found in objects that list as good).

    Backups that are not DONE are left out of the state (they never list as good); objects of a DONE
    backup must match the catalog's sha256. `exact` also compares object contents (runs whose inputs are
    the same: copy, prune); otherwise only names, kinds, codecs and key ids (backups of a live cluster).
    """
    stored = objects(client, bucket, prefix)
    state: dict[str, Any] = {}
    problems: list[str] = []
    catalogs = {n.split("/")[1]: json.loads(b) for n, b in stored.items() if n.endswith("/catalog.json")}
    good = {bid for bid, doc in catalogs.items() if doc.get("status") == "DONE"}
    for bid in good:
        for entry in catalogs[bid]["files"]:
            body = stored.get(f"backups/{bid}/{entry['name']}")
            if body is None or hashlib.sha256(body).hexdigest() != entry["sha256"]:
                problems.append(f"backup {bid} lists as good but {entry['name']} is {'missing' if body is None else 'damaged'}")
    for name, body in stored.items():
        parts = name.split("/")
        if parts[0] == "audit":
            continue  # the audit trail logs every run, faulted ones too: a record of runs, not repository state
        if parts[0] == "backups" and parts[1] not in good:
            continue  # a failed or unfinished backup: never read as good
        if parts[0] == "buckets" and len(parts) > 3 and f"buckets/{parts[1]}/{parts[2]}/manifest.json" not in stored:
            continue  # documents of a bucket backup that never finished
        key = BACKUP_ID.sub(lambda m: f"<{m.group(1)}>", name)
        if name.endswith(".json"):
            doc = json.loads(body)
            if name == "copy-status.json":  # the rest counts what the last run did
                doc = {k: doc.get(k) for k in ("backups", "newest_wal", "source")}
            if "sealings" in doc:
                doc["sealings"] = sorted({(s or {}).get("key_id") for s in doc["sealings"].values()} - {None})
            state[key] = _strip(doc) if exact or name.endswith("catalog.json") else {"sealings": doc.get("sealings")}
            if not exact and name.endswith("catalog.json"):
                state[key] = {k: state[key].get(k) for k in ("kind", "status", "parent", "encryption")} | {
                    "files": sorted(f["name"] for f in doc["files"])}  # fmt: skip
                enc = doc.get("encryption") or {}
                state[key]["encryption"] = enc.get("key_id")
        elif (header := _envelope(body)) is not None:
            state[key] = {"name": header.get("name"), "key_id": (header.get("encryption") or {}).get("key_id"),
                          **({"sha256": header.get("sha256")} if exact else {})}  # fmt: skip
        else:
            state[key] = hashlib.sha256(body).hexdigest() if exact else "object"
    return state, problems


@dataclass
class Tally:
    """Faults tried / handled / lost per operation, for the summary line and docs/reliability.md."""

    counts: dict[str, Counter] = field(default_factory=dict)

    def add(self, op: str, outcome: str) -> None:
        """Count one faulted run: 'failed-cleanly', 'succeeded', 'unclear' (no clear error line) or 'lost'."""
        self.counts.setdefault(op, Counter())[outcome] += 1

    def line(self, op: str) -> str:
        """One summary line for an operation."""
        c = self.counts.get(op, Counter())
        tried = sum(c.values())
        return (f"{op}: tried {tried}, handled {c['failed-cleanly'] + c['succeeded']} ({c['failed-cleanly']} failed "
                f"cleanly, {c['succeeded']} succeeded), unclear {c['unclear']}, lost {c['lost']}")  # fmt: skip
