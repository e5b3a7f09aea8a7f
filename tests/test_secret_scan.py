"""Secret scan (issue 9 item 12): a password-protected role and an encryption key in use while backup-tools
backs up, archives, lists, verifies, checks (alerting a webhook), copies and restores; a watcher samples
/proc/*/cmdline and /proc/*/environ of every process it may read every few milliseconds. Afterwards every
output, log, JSON document, repository object, alert payload and /proc sample is searched for the password
and the key (text and raw bytes): zero hits. A drill run (pytest drills, production-like world) is scanned the
same way for every password and key it wrote: report, results, JUnit, evidence bundle, server logs, outputs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backup_tools.security.keys import generate_key_file_text
from tests.support.production import ROOT
from tests.support.repo_ops import cli_ok, run_cli
from tests.support.secretscan import ProcWatcher, files_under, hits, needles_of

pytestmark = pytest.mark.integration


def webhook_receiver() -> tuple[ThreadingHTTPServer, list[bytes]]:
    """A local HTTP server that keeps every POSTed body."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, bodies


def logical_id(url: str, env: dict[str, str]) -> str:
    """The newest logical backup's id."""
    return [b["id"] for b in json.loads(cli_ok("list", "--repo", url, "--json", env=env)) if b["kind"] == "logical"][-1]


def test_no_password_or_key_in_argv_environ_output_logs_reports_or_alerts(make_cluster, tmp_path):
    key = tmp_path / "secret.key"
    key.write_text(generate_key_file_text())
    key.chmod(0o600)
    raw_key = base64.b64decode(key.read_text().strip().split()[-1])
    repo, dr = tmp_path / "repo", tmp_path / "dr"
    dr.mkdir()
    env = {"PGDRILL_KEY_FILE": str(key)}
    cluster = make_cluster("secret", env=env)
    cluster.init(has_archiving=True, archive_url=f"file://{repo}", password_auth=True)
    password = cluster.passfile.read_text().strip().splitlines()[-1].rsplit(":", 1)[1]
    assert len(password) >= 16
    env |= cluster.pass_env
    server, alerts = webhook_receiver()
    config = tmp_path / "monitor.toml"
    config.write_text('[monitor]\nmax_age = "1s"\n[monitor.webhook]\nurl_env = "PGDRILL_TEST_WEBHOOK"\n')
    watcher = ProcWatcher()
    watcher.start()
    outputs: list[str] = []
    try:
        cluster.start()
        cluster.safe_sql("CREATE TABLE ledger (id int PRIMARY KEY, note text)")
        cluster.safe_sql("INSERT INTO ledger SELECT g, 'row ' || g FROM generate_series(1, 100) g")
        url = f"file://{repo}"
        steps = [
            ["backup", "--dsn", cluster.dsn, "--repo", url, "--kind", "full"],
            ["backup", "--dsn", cluster.dsn, "--repo", url, "--kind", "logical"],
            ["list", "--repo", url, "--json"],
            ["verify", "--repo", url, "--backup", "all", "--json"],
            ["copy", "--repo", url, "--to-repo", f"file://{dr}", "--backup", "all", "--json"],
            ["check", "--repo", url, "--json", "--config", str(config)],
        ]
        cluster.archive_current_wal()
        for argv in steps:
            if argv[0] == "check":  # every backup older than max_age, so check does alert (the steps may take < 1 s)
                time.sleep(1.1)
            done = run_cli(*argv, env=env | {"PGDRILL_TEST_WEBHOOK": server.server_address and
                                             f"http://127.0.0.1:{server.server_address[1]}/hook"})  # fmt: skip
            outputs += [done.stdout, done.stderr]
            assert done.returncode == 0 or argv[0] == "check", done.stderr
        cluster.safe_sql("CREATE DATABASE restored")
        for argv in (["restore", "--repo", url, "--to", str(tmp_path / "restored")],
                     ["restore", "--repo", url, "--backup", logical_id(url, env), "--dsn", cluster.dsn_for("restored")]):  # fmt: skip
            done = run_cli(*argv, env=env)
            outputs += [done.stdout, done.stderr]
            assert done.returncode == 0, done.stderr
    finally:
        watcher.stop.set()
        watcher.join()
        server.shutdown()
    assert alerts, "check sent no alert: the payload scan would prove nothing"
    needles = {"password": password.encode(), "key text": key.read_text().strip().encode(), "raw key": raw_key}
    assert needles["password"] in cluster.passfile.read_bytes()  # the scan looks for the right bytes
    haystacks: dict[str, bytes] = {f"output {i}": o.encode() for i, o in enumerate(outputs)}
    haystacks |= {f"alert {i}": body for i, body in enumerate(alerts)}
    haystacks |= {f"/proc sample {i}": s for i, s in enumerate(watcher.samples)}
    secret_files = {key, cluster.passfile}
    for path in tmp_path.rglob("*"):
        if path.is_file() and path not in secret_files and not path.is_symlink():
            haystacks[str(path.relative_to(tmp_path))] = path.read_bytes()
    hits = [f"{what} in {where}" for where, data in haystacks.items() for what, needle in needles.items()
            if needle in data]  # fmt: skip
    print(f"secret scan: {len(haystacks)} outputs, files, alert payloads and /proc samples "
          f"({watcher.rounds} /proc rounds), {len(hits)} hits")  # fmt: skip
    assert hits == [], hits
    assert any(json.loads(b) for b in alerts)


# Drills that between them write every kind of artifact with every kind of secret: the seeded world's passwords
# (template superuser, app_owner, app_user) on copies, physical and logical restores (fresh scram clusters with their
# own superuser passwords), the gate's stand-in and its pg_dumpall roles, and encryption keys.
SCANNED_DRILLS = "crash_recovery or full-drop-table or logical-drop-table or wrong_encryption_key or gate"


def test_no_password_or_key_in_anything_a_drill_run_writes(tmp_path):
    base, report = tmp_path / "basetemp", tmp_path / "report"
    watcher = ProcWatcher(interval=0.01, harvest_under=base)
    watcher.start()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "drills", "-k", SCANNED_DRILLS, "--scale", "0.05",
                               "--basetemp", str(base), "--report-dir", str(report), "-p", "no:cacheprovider",
                               "--history-file", str(tmp_path / "history.jsonl")],
                              cwd=ROOT, capture_output=True, timeout=1200)  # fmt: skip
    finally:
        watcher.stop.set()
        watcher.join()
    assert done.returncode == 0, done.stdout.decode()[-3000:]
    needles = needles_of(watcher.secret_files)
    passwords = [what for what in needles.values() if what.startswith("a password")]
    assert len(passwords) >= 5 and any("raw key" in what for what in needles.values()), needles.values()
    written = files_under(report) | {f"basetemp/{k}": v for k, v in files_under(base).items()}
    for kind in ("report.html", "drill-results.json", "junit.xml", "manifest.json", ".log"):
        assert any(name.endswith(kind) for name in written), f"the run wrote no {kind}: the scan would prove nothing"
    haystacks = written | {"pytest stdout": done.stdout, "pytest stderr": done.stderr}
    haystacks |= {f"/proc sample {i}": s for i, s in enumerate(watcher.samples)}
    found = hits(haystacks, needles)
    planted = next(n for n, what in needles.items() if what.startswith("a password"))
    assert hits({"planted": b"log line " + planted}, needles), "the scan does not find a password it was given"
    print(f"secret scan of a drill run: {len(needles)} secrets ({len(passwords)} passwords), {len(haystacks)} files, "
          f"outputs and /proc samples ({watcher.rounds} /proc rounds), {len(found)} hits")  # fmt: skip
    assert found == [], found
