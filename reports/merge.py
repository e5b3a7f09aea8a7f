"""Merge the run directories of --shard runs (one per CI runner) into one report, results, JUnit and evidence bundle."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from backup_tools.errors import BackupToolsError, UsageError
from backup_tools.monitor.history import append_history, read_history
from backup_tools.security.evidence import MANIFEST, SIGNATURE, verify_bundle
from reports import evidence
from reports.controls import SCENARIOS, render_compliance
from reports.details import render_details
from reports.history import open_history, render_history
from reports.render import render_summary, why

RESULTS = "drill-results.json"
COPIED = ("logs", "artifacts")  # per-drill directories; their names are unique per test


@dataclass
class Shard:
    """One shard's run directory and its drill-results.json."""

    path: Path
    doc: dict[str, Any]

    @property
    def run_id(self) -> str:
        """The shard's own run id."""
        return str(self.doc.get("run_id"))


def find_shards(paths: list[Path]) -> list[Path]:
    """Run directories (holding drill-results.json) given directly or anywhere below the given directories."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise UsageError(f"{path} is not a directory; pass the shards' run directories (or a folder holding them)")
        runs = [path] if (path / RESULTS).is_file() else sorted(p.parent for p in path.rglob(RESULTS))
        runs = [r for r in runs if not any(o in r.parents for o in runs)]  # a run's own folders hold no runs
        if not runs:
            raise UsageError(f"no {RESULTS} in or under {path}; pass the --report-dir of each shard's run")
        found += [r for r in runs if r not in found]
    return found


def load_shard(path: Path, *, public_key: Any = None) -> Shard:
    """Read a shard after checking its bundle: every file as its manifest says, and its signature if it has one."""
    check = verify_bundle(path, public_key=public_key)
    if not check.ok:
        raise BackupToolsError(f"shard {path} does not match its evidence manifest ({check.problems[0]}); "
                               "merge only the shards' bundles as their runs wrote them")  # fmt: skip
    try:
        doc = json.loads((path / RESULTS).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path / RESULTS}: {e}") from e
    if not isinstance(doc.get("drills"), list):
        raise UsageError(f"{path / RESULTS} has no drills list; is it a pgdrill run's results file?")
    return Shard(path, doc)


def merge_records(shards: list[Shard], *, run_id: str) -> list[dict[str, Any]]:
    """Every shard's drills under the merged run id (the shard's own id kept); a test run by two shards is refused."""
    seen: dict[str, str] = {}
    records = []
    for shard in shards:
        for record in shard.doc["drills"]:
            test = str(record.get("test"))
            if test in seen:
                raise UsageError(f"{test} ran in two shards ({seen[test]} and {shard.path}); give each runner its own "
                                 "--shard I/N of one N, and merge each shard once")  # fmt: skip
            seen[test] = str(shard.path)
            records.append({**record, "shard_run_id": shard.run_id, "run_id": run_id})
    return records


def missing_shards(shards: list[Shard]) -> list[str]:
    """The I/N shares not among the shards (from the 'Shard' each --shard run records); mixed splits are refused."""
    declared = [str((s.doc.get("environment") or {}).get("Shard") or "") for s in shards]
    if not any(declared):
        return []
    if not all(declared) or len({d.split("/")[1] for d in declared}) != 1:
        raise UsageError(f"the shards are not one split ({', '.join(d or 'no --shard' for d in declared)}); merge "
                         "the runs of one --shard I/N split")  # fmt: skip
    count = int(declared[0].split("/")[1])
    return [f"{i}/{count}" for i in range(1, count + 1) if f"{i}/{count}" not in declared]


def merge_junit(shards: list[Shard], dest: Path) -> Path:
    """One <testsuites> with one <testsuite> holding every shard's test cases, its counts summed."""
    merged = ET.Element("testsuite", name="pytest")
    totals = dict.fromkeys(("errors", "failures", "skipped", "tests"), 0)
    wall = 0.0
    for shard in shards:
        path = shard.path / "junit.xml"
        if not path.is_file():
            continue
        root = ET.parse(path).getroot()
        for suite in root.iter("testsuite"):
            for key in totals:
                totals[key] += int(suite.get(key, 0))
            wall = max(wall, float(suite.get("time", 0)))  # the shards ran side by side
            merged.extend(suite.findall("testcase"))
    merged.attrib.update({k: str(v) for k, v in totals.items()} | {"time": f"{wall:.3f}",
                         "timestamp": datetime.now(UTC).isoformat(timespec="seconds")})  # fmt: skip
    out = ET.ElementTree(ET.Element("testsuites"))
    out.getroot().append(merged)
    out.write(dest / "junit.xml", encoding="utf-8", xml_declaration=True)
    return dest / "junit.xml"


def render_page(records: list[dict[str, Any]], *, run_id: str, shards: list[Shard], history: Any,
                history_path: Path, stale_after: timedelta, last: int) -> str:  # fmt: skip
    """The merged report: the drill summary, one details block per drill, trends and compliance (pgdrill's CSS)."""
    css = Path(__file__).with_name("pgdrill.css").read_text()
    listed = "".join(f"<li>{escape(s.run_id)}: {len(s.doc['drills'])} drill(s) from {escape(str(s.path))}</li>"
                     for s in shards)  # fmt: skip
    details = "".join(f'<section class="pgdrill-drill" id="{escape(str(r.get("test")))}"><h3>{escape(str(r.get("test")))}'
                      f"</h3>{render_details(r, log_lines=r.get('server_log_tail') or [])}</section>"
                      for r in records)  # fmt: skip
    trends = render_history(history.records, last=last, stale_after=stale_after, scenarios=SCENARIOS,
                            source=str(history_path), bad_lines=history.bad_lines)  # fmt: skip
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>pgdrill: merged drill report {escape(run_id)}</title>'
        f"<style>{css}</style></head><body><h1>pgdrill: backup restore and DR drill report (merged)</h1>"
        f'<p class="pgdrill-muted">Merged run {escape(run_id)} from {len(shards)} shard(s):</p><ul>{listed}</ul>'
        f"{render_summary(records, run_id=run_id)}<h2>Drills</h2>{details}{trends}"
        f"{render_compliance(records, history.records, stale_after=stale_after)}</body></html>\n"
    )


def merge(paths: list[Path], *, out: Path, history_path: Path, key_path: str | None, archive: bool = False,
          public_key: Any = None, stale_days: int = 30, history_runs: int = 20, allow_missing: bool = False) -> tuple[list[dict[str, Any]], evidence.Bundle]:  # fmt: skip
    """Merge shard run directories into out: results, JUnit, report, logs and artifacts, history once, signed bundle."""
    key = evidence.load_signing_key(key_path)
    shards = [load_shard(p, public_key=public_key) for p in find_shards(paths)]
    missing = missing_shards(shards)
    if missing and not allow_missing:
        raise BackupToolsError(f"shard(s) {', '.join(missing)} missing: their drills would be absent from the merged "
                               "evidence; pass every shard's run directory (or --allow-missing-shards)")  # fmt: skip
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; merge into a new directory")
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-merged"
    records = merge_records(shards, run_id=run_id)
    out.mkdir(parents=True, exist_ok=True)
    for shard in shards:
        for name in COPIED:
            if (shard.path / name).is_dir():
                shutil.copytree(shard.path / name, out / name, dirs_exist_ok=True)
        kept = out / "shards" / shard.run_id  # each shard's own manifest: what its runner hashed (and signed)
        kept.mkdir(parents=True)
        for name in (MANIFEST, SIGNATURE, RESULTS):
            if (shard.path / name).is_file():
                shutil.copy2(shard.path / name, kept / name)
    started = min(str(s.doc.get("started_at") or "") for s in shards) or None
    finished = max(str(s.doc.get("finished_at") or "") for s in shards) or datetime.now(UTC).isoformat()
    environment = {**(shards[0].doc.get("environment") or {}), "Run": run_id,
                   "Shards": ", ".join(s.run_id for s in shards)}  # fmt: skip
    environment.pop("Shard", None)
    if missing:
        environment["Missing shards"] = ", ".join(missing)
    doc = {"schema_version": shards[0].doc.get("schema_version"), "run_id": run_id, "started_at": started,
           "finished_at": finished, "environment": environment, "drills": records}  # fmt: skip
    (out / RESULTS).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    evidence.write_summary(out, records)
    merge_junit(shards, out)
    with open_history(history_path) as handle:  # the merged run is appended once, as one run
        append_history(handle, [{**r, "finished_at": finished} for r in records])
    history = read_history(history_path)
    scenarios = {r["scenario"] for r in records}
    evidence.write_history_excerpt(out, [r for r in history.records if r.get("scenario") in scenarios])
    (out / "report.html").write_text(render_page(records, run_id=run_id, shards=shards, history=history,
                                                 history_path=history_path, stale_after=timedelta(days=stale_days),
                                                 last=history_runs))  # fmt: skip
    return records, evidence.finish_bundle(out, run_id=run_id, key=key, archive=archive)


def summary_lines(records: list[dict[str, Any]], bundle: evidence.Bundle) -> list[str]:
    """What the merge prints: each failed drill, where the bundle is and how to verify it."""
    lines = [f"pgdrill: {r['verdict'].upper()} {r['scenario']}/{r['method']}: {why(r)}" for r in records
             if r.get("verdict") in ("fail", "error")]  # fmt: skip
    signed = f"signed by key {bundle.key_id}" if bundle.key_id else "unsigned"
    lines.append(f"pgdrill: merged {len(records)} drill(s) into {bundle.directory}")
    lines.append(
        f"pgdrill: evidence bundle ({signed}): backup-tools evidence verify {bundle.archive or bundle.directory}"
    )
    return lines
