"""Alert delivery to REAL local receivers: an SMTP server (aiosmtpd) and an HTTP webhook server, both in threads."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backup_tools.cli.main import main
from backup_tools.errors import UsageError
from backup_tools.monitor.alerts import Alert, EmailReceiver, WebhookReceiver, deliver, receivers_from_config
from backup_tools.monitor.checks import run_checks
from backup_tools.monitor.config import MonitorConfig
from backup_tools.pg.ports import free_port
from tests.support.monitor_env import RepoHistory

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PASSWORD = "s3cret-Sm7p-pass"


@dataclass
class Mailbox:
    """What the SMTP server received: parsed messages, envelope recipients and AUTH attempts."""

    port: int
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        self.raw.append(envelope.content)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == ("monitor", PASSWORD), handled=False)


def _start_smtp(mailbox: Mailbox, **kwargs: Any):
    controller_module = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd provides the SMTP receiver")
    controller = controller_module.Controller(mailbox, hostname="127.0.0.1", port=mailbox.port, **kwargs)
    controller.start()
    return controller


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    mailbox = Mailbox(free_port())
    controller = _start_smtp(mailbox)
    yield mailbox
    controller.stop()


@pytest.fixture
def tls_smtp_server(tmp_path) -> Iterator[tuple[Mailbox, Path]]:
    """STARTTLS with a self-signed certificate for 127.0.0.1 and AUTH PLAIN (only after STARTTLS)."""
    import ssl

    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox(free_port())
    controller = _start_smtp(mailbox, tls_context=context, require_starttls=True, authenticator=mailbox.authenticate,
                             auth_require_tls=True, auth_exclude_mechanism=["LOGIN"])  # fmt: skip
    yield mailbox, cert
    controller.stop()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's hook name)
        server: WebhookServer = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status = server.statuses.pop(0) if server.statuses else 200
        time.sleep(server.delay)
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"no")

    def log_message(self, *args: Any) -> None:
        pass


class WebhookServer(ThreadingHTTPServer):
    """A local HTTP server recording every POST; answers with queued status codes (then 200), optionally slowly."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.delay = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/services/T000/B000/Xtoken42secret"

    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out closed its end: expected in the time-out test

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    server = WebhookServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def failing_alert(tmp_path) -> Alert:
    """An alert built from real checks: the newest dump is 26 h old and the last three backups FAILED."""
    history = RepoHistory(tmp_path / "repo", NOW)
    history.backup(hours_ago=50, verified_hours_ago=40)
    history.backup(hours_ago=26.1, verified_hours_ago=20)
    for hours in (20, 10, 2):
        history.backup(
            hours_ago=hours, status="FAILED", error="pg_dump: connection to 'host=db password=hunter2' failed"
        )
    results = run_checks(history.repo, MonitorConfig(max_age=timedelta(hours=25)), now=NOW)
    failed = tuple(r.to_dict() for r in results if not r.ok)
    assert [c["name"] for c in failed] == ["freshness:logical", "failures:logical"]
    return Alert("failed", history.url, "db-backup-1", NOW, failed, ok_count=len(results) - len(failed))


def test_email_alert_reaches_the_smtp_server(smtp_server, failing_alert):
    receiver = EmailReceiver(host="127.0.0.1", port=smtp_server.port, sender="pgdrill@example.com",
                             to=("ops@example.com", "dba@example.com"), timeout=5)  # fmt: skip
    (delivery,) = deliver(failing_alert, [receiver])
    assert delivery.ok and delivery.attempts == 1 and delivery.receiver == f"email smtp://127.0.0.1:{smtp_server.port}"
    (msg,) = smtp_server.messages
    assert smtp_server.recipients == [["ops@example.com", "dba@example.com"]]
    assert msg["Subject"] == (f"[pgdrill] CRITICAL: 2 backup check(s) failed for {failing_alert.repo} on db-backup-1")
    assert msg["From"] == "pgdrill@example.com" and msg["To"] == "ops@example.com, dba@example.com"
    body = msg.get_content()
    assert "CRITICAL freshness:logical: newest logical backup" in body and "limit 25 h 00 min" in body
    assert "CRITICAL failures:logical: the newest 3 logical backup(s) FAILED" in body
    assert f"details: backup-tools check --repo {failing_alert.repo}" in body
    assert "hunter2" not in smtp_server.raw[0].decode() and "password=***" in body


def test_starttls_login_with_password_from_env_or_file(tls_smtp_server, failing_alert, monkeypatch, tmp_path):
    mailbox, cert = tls_smtp_server
    base = {"host": "127.0.0.1", "port": mailbox.port, "from": "pgdrill@example.com", "to": "ops@example.com",
            "starttls": True, "ca_file": str(cert), "username": "monitor", "timeout": "5s"}  # fmt: skip
    monkeypatch.setenv("PGDRILL_SMTP_PASSWORD", PASSWORD)
    secret_file = tmp_path / "smtp-password"
    secret_file.write_text(PASSWORD + "\n")
    receivers = receivers_from_config({"email": [{**base, "password_env": "PGDRILL_SMTP_PASSWORD"},
                                                 {**base, "password_file": str(secret_file)}]})  # fmt: skip
    deliveries = deliver(failing_alert, receivers)
    assert [d.ok for d in deliveries] == [True, True], deliveries
    assert mailbox.logins == [("monitor", PASSWORD)] * 2 and len(mailbox.messages) == 2
    assert all(PASSWORD not in raw.decode() for raw in mailbox.raw)
    monkeypatch.setenv("PGDRILL_SMTP_PASSWORD", "wrong-Pa55")
    (bad,) = deliver(failing_alert, receivers[:1], sleep=lambda s: pytest.fail("a rejected login was retried"))
    assert not bad.ok and bad.attempts == 1 and "SMTPAuthenticationError" in bad.error and "wrong-Pa55" not in bad.error
    monkeypatch.delenv("PGDRILL_SMTP_PASSWORD")
    (unset,) = deliver(failing_alert, receivers[:1])
    assert not unset.ok and "PGDRILL_SMTP_PASSWORD (password_env) is not set" in unset.error
    plain = EmailReceiver(host="127.0.0.1", port=mailbox.port, sender="a@example.com", to=("b@example.com",), timeout=5)
    (refused,) = deliver(failing_alert, [plain])  # the server demands STARTTLS first
    assert not refused.ok and len(mailbox.messages) == 2


def test_smtp_receiver_down_is_a_failed_delivery_with_bounded_retries(failing_alert):
    waits: list[float] = []
    receiver = EmailReceiver(host="127.0.0.1", port=free_port(), sender="a@example.com", to=("b@example.com",),
                             timeout=2, retries=2, retry_delay=0.5)  # fmt: skip
    (delivery,) = deliver(failing_alert, [receiver], sleep=waits.append)
    assert not delivery.ok and delivery.attempts == 3 and waits == [0.5, 1.0]
    assert "refused" in delivery.error.lower()
    no_ca = EmailReceiver(host="127.0.0.1", port=free_port(), sender="a@example.com", to=("b@example.com",),
                          ca_file="/nonexistent/ca.pem", retries=2)  # fmt: skip
    (bad_ca,) = deliver(failing_alert, [no_ca], sleep=waits.append)
    assert not bad_ca.ok and bad_ca.attempts == 1 and "cannot load ca_file /nonexistent/ca.pem" in bad_ca.error


def test_webhook_gets_slack_text_and_structured_body(webhook, failing_alert):
    (delivery,) = deliver(failing_alert, [WebhookReceiver(url=webhook.url, timeout=5)])
    assert delivery.ok and delivery.receiver == f"webhook http://127.0.0.1:{webhook.server_address[1]}/…"
    (request,) = webhook.requests
    assert request["path"] == "/services/T000/B000/Xtoken42secret"
    assert request["headers"]["Content-Type"] == "application/json"
    (doc,) = webhook.json()
    assert doc["text"].startswith("[pgdrill] CRITICAL: 2 backup check(s) failed for file://")
    assert "CRITICAL failures:logical" in doc["text"] and "hunter2" not in json.dumps(doc)
    body = doc["pgdrill"]
    assert (body["event"], body["host"], body["repo"], body["ok_count"]) == ("failed", "db-backup-1", failing_alert.repo,
                                                                              failing_alert.ok_count)  # fmt: skip
    assert [(c["name"], c["severity"]) for c in body["checks"]] == [("freshness:logical", "critical"),
                                                                     ("failures:logical", "critical")]  # fmt: skip
    assert body["checks"][1]["figures"]["consecutive_failed"] == 3
    assert datetime.fromisoformat(body["checked_at"]) == NOW


def test_webhook_retries_server_errors_but_not_client_errors(webhook, failing_alert):
    waits: list[float] = []
    receiver = WebhookReceiver(url=webhook.url, timeout=5, retries=2, retry_delay=0.01)
    webhook.statuses = [503, 500]
    (delivery,) = deliver(failing_alert, [receiver], sleep=waits.append)
    assert delivery.ok and delivery.attempts == 3 and len(webhook.requests) == 3 and waits == [0.01, 0.02]
    webhook.statuses = [503] * 5
    (gave_up,) = deliver(failing_alert, [receiver], sleep=waits.append)
    assert not gave_up.ok and gave_up.attempts == 3 and len(webhook.requests) == 6 and "HTTP 503" in gave_up.error
    webhook.statuses = [404]
    (rejected,) = deliver(failing_alert, [receiver], sleep=waits.append)
    assert not rejected.ok and rejected.attempts == 1 and "HTTP 404" in rejected.error
    assert all("Xtoken42secret" not in str(d) for d in (delivery, gave_up, rejected))


def test_webhook_time_out_is_bounded(webhook, failing_alert):
    webhook.delay = 3.0
    started = time.monotonic()
    (delivery,) = deliver(failing_alert, [WebhookReceiver(url=webhook.url, timeout=0.3, retries=1, retry_delay=0.01)])
    assert not delivery.ok and delivery.attempts == 2 and "timed out" in delivery.error
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param({"email": {"host": "h", "from": "a@x", "to": "b@x", "password": "p"}}, "password_env", id="pw"),
        pytest.param({"email": {"host": "h", "to": "b@x"}}, "needs from", id="from"),
        pytest.param({"email": {"host": "h", "from": "a", "to": "b", "tls": True}}, "unknown key", id="unknown"),
        pytest.param({"webhook": {"url": "ftp://x/y"}}, "http:// or https://", id="scheme"),
        pytest.param({"webhook": {"url_env": "PGDRILL_NO_SUCH_HOOK"}}, "PGDRILL_NO_SUCH_HOOK", id="url-env"),
        pytest.param({"webhook": {"url": "http://x/", "retries": 50}}, "0 to 5", id="retries"),
        pytest.param({"webhook": {"url": "http://x/", "timeout": "soon"}}, "invalid duration", id="timeout"),
    ],
)
def test_bad_receiver_config_is_a_usage_error(config, message):
    with pytest.raises(UsageError, match=message):
        receivers_from_config(config)


def test_receivers_from_config_tables_lists_and_env(monkeypatch):
    monkeypatch.setenv("PGDRILL_HOOK", "https://hooks.example.com/T1/B2/tok")
    receivers = receivers_from_config({"webhook": [{"url_env": "PGDRILL_HOOK", "retries": 0}, {"url": "http://h:8/x"}],
                                       "email": {"host": "mx", "from": "a@x", "to": ["b@x", "c@x"], "port": 587}})  # fmt: skip
    assert [r.label for r in receivers] == ["email smtp://mx:587", "webhook https://hooks.example.com/…",
                                            "webhook http://h:8/…"]  # fmt: skip
    assert receivers[0].to == ("b@x", "c@x") and receivers[1].retries == 0


def _config(tmp_path: Path, *, smtp_port: int, hook: str, extra: str = "") -> Path:
    path = tmp_path / "monitor.toml"
    path.write_text(f"""
[tool.pgdrill.monitor]
max_age = "25h"
capacity_warn_percent = 100
capacity_critical_percent = 100
{extra}
[tool.pgdrill.monitor.email]
host = "127.0.0.1"
port = {smtp_port}
from = "pgdrill@example.com"
to = ["ops@example.com"]
timeout = "3s"
retries = 1
retry_delay = "0.1s"
[tool.pgdrill.monitor.webhook]
url = "{hook}"
timeout = "3s"
""")
    return path


def live_history(tmp_path: Path, *, newest_hours_ago: float) -> RepoHistory:
    """Backups relative to the real clock (the CLI checks against now)."""
    history = RepoHistory(tmp_path / "repo", datetime.now(UTC))
    for hours in (newest_hours_ago + 48, newest_hours_ago + 24, newest_hours_ago):
        history.backup(hours_ago=hours, verified_hours_ago=newest_hours_ago + 1)
    return history


def test_cli_alerts_both_receivers_only_on_failure(tmp_path, smtp_server, webhook, capsys):
    config = _config(tmp_path, smtp_port=smtp_server.port, hook=webhook.url)
    fresh = live_history(tmp_path / "fresh", newest_hours_ago=2)
    assert main(["check", "--repo", fresh.url, "--config", str(config)]) == 0
    assert smtp_server.messages == [] and webhook.requests == []
    stale = live_history(tmp_path / "stale", newest_hours_ago=26)
    assert main(["check", "--repo", stale.url, "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert "CRITICAL freshness:logical: newest logical backup" in out
    assert f"alert sent to email smtp://127.0.0.1:{smtp_server.port}" in err and "alert sent to webhook" in err
    (msg,) = smtp_server.messages
    assert "1 backup check(s) failed" in msg["Subject"] and "freshness:logical" in msg.get_content()
    (doc,) = webhook.json()
    assert [c["name"] for c in doc["pgdrill"]["checks"]] == ["freshness:logical"]
    assert main(["check", "--repo", stale.url, "--config", str(config), "--no-alerts"]) == 1
    assert len(webhook.requests) == 1 and len(smtp_server.messages) == 1


def test_cli_smtp_down_reports_the_delivery_failure_and_still_prints_the_checks(tmp_path, webhook, capsys):
    config = _config(tmp_path, smtp_port=free_port(), hook=webhook.url)
    stale = live_history(tmp_path, newest_hours_ago=26)
    assert main(["check", "--repo", stale.url, "--config", str(config), "--json"]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [c["name"] for c in doc["checks"] if not c["ok"]] == ["freshness:logical"]
    email_delivery, hook_delivery = doc["alerts"]
    assert not email_delivery["ok"] and email_delivery["attempts"] == 2 and hook_delivery["ok"]
    assert "alert delivery to email smtp://127.0.0.1" in err and "the check results above stand" in err
    assert len(webhook.requests) == 1  # one broken receiver does not silence the others
    fresh = live_history(tmp_path / "fresh", newest_hours_ago=1)
    assert main(["check", "--repo", fresh.url, "--config", str(config)]) == 0  # nothing to send, nothing fails
    assert "OK       freshness:logical" in capsys.readouterr().out


def test_cli_sends_resolved_once_the_checks_pass_again(tmp_path, webhook, capsys):
    state = tmp_path / "state" / "monitor-state.json"
    config = tmp_path / "hook.toml"
    config.write_text(f'[tool.pgdrill.monitor]\nstate_file = "{state}"\n[tool.pgdrill.monitor.webhook]\n'
                      f'url = "{webhook.url}"\n')  # fmt: skip
    history = live_history(tmp_path, newest_hours_ago=2)
    assert main(["check", "--repo", history.url, "--config", str(config), "--max-age", "1h"]) == 1
    assert json.loads(state.read_text())["failing"].keys() == {"freshness:logical"}
    assert main(["check", "--repo", history.url, "--config", str(config), "--max-age", "1h"]) == 1
    assert main(["check", "--repo", history.url, "--config", str(config)]) == 0
    assert main(["check", "--repo", history.url, "--config", str(config)]) == 0
    capsys.readouterr()
    events = [(d["pgdrill"]["event"], [c["name"] for c in d["pgdrill"]["checks"]]) for d in webhook.json()]
    assert events == [("failed", ["freshness:logical"]), ("failed", ["freshness:logical"]),
                      ("resolved", ["freshness:logical"])]  # fmt: skip
    assert webhook.json()[2]["text"].startswith("[pgdrill] RESOLVED: 1 backup check(s) pass again")
    assert json.loads(state.read_text()) == {"failing": {}}


@pytest.mark.integration
def test_deleted_wal_segment_makes_check_fail_and_alert(make_cluster, tmp_path, webhook):
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    repo_url = f"file://{repo_dir}"
    cluster = make_cluster("primary")
    cluster.init(has_archiving=True, archive_url=repo_url)  # archive_command = backup-tools wal-push %p
    cluster.start()
    cluster.safe_sql("CREATE TABLE ledger (id int PRIMARY KEY)")
    run = [sys.executable, "-m", "backup_tools"]
    backup = subprocess.run([*run, "backup", "--dsn", cluster.dsn, "--repo", repo_url, "--kind", "full"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert backup.returncode == 0, backup.stderr
    for i in range(3):
        cluster.safe_sql(f"INSERT INTO ledger VALUES ({i})")
        cluster.archive_current_wal()
    config = tmp_path / "monitor.toml"
    config.write_text(f'[tool.pgdrill.monitor.webhook]\nurl = "{webhook.url}"\ntimeout = "5s"\n')
    check = [*run, "check", "--repo", repo_url, "--config", str(config)]
    healthy = subprocess.run(check, capture_output=True, text=True, timeout=120)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "OK       wal:continuity" in healthy.stdout and webhook.requests == []

    segments = sorted(p.name for p in (repo_dir / "wal").iterdir() if len(p.name) == 24)
    victim = segments[-2]  # archived after the backup, before the newest segment: a hole in the chain
    (repo_dir / "wal" / victim).unlink()
    broken = subprocess.run(check, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"CRITICAL wal:continuity: GAP on timeline 1: {victim} .. {victim} (1 segment(s))" in broken.stdout
    (doc,) = webhook.json()
    (failed,) = doc["pgdrill"]["checks"]
    assert failed["name"] == "wal:continuity" and failed["figures"]["gaps"][0]["first"] == victim
    assert victim in doc["text"]


def test_cli_digest_sends_every_check_to_both_receivers_daily_even_when_all_pass(tmp_path, smtp_server, webhook,
                                                                                 capsys):  # fmt: skip
    config = _config(tmp_path, smtp_port=smtp_server.port, hook=webhook.url)
    fresh = live_history(tmp_path / "fresh", newest_hours_ago=2)
    assert main(["check", "--repo", fresh.url, "--config", str(config), "--digest"]) == 0
    capsys.readouterr()
    (msg,) = smtp_server.messages
    assert msg["Subject"].startswith("[pgdrill] DAILY DIGEST: ") and "(all OK)" in msg["Subject"]
    assert "OK freshness:logical" in msg.get_content() and "OK capacity" in msg.get_content()
    (doc,) = webhook.json()
    assert doc["pgdrill"]["event"] == "digest" and all(c["ok"] for c in doc["pgdrill"]["checks"])
    assert {c["name"] for c in doc["pgdrill"]["checks"]} >= {"freshness:logical", "verified:logical", "capacity"}
    stale = live_history(tmp_path / "stale", newest_hours_ago=26)
    assert main(["check", "--repo", stale.url, "--config", str(config), "--digest"]) == 1
    capsys.readouterr()
    events = [d["pgdrill"]["event"] for d in webhook.json()]
    assert events == ["digest", "failed", "digest"]  # the failure alert as always, and the day's digest
    assert "1 FAILING" in webhook.json()[2]["text"] and "CRITICAL freshness:logical" in webhook.json()[2]["text"]
    assert main(["check", "--repo", stale.url, "--config", str(config), "--digest", "--no-alerts"]) == 1
    assert [d["pgdrill"]["event"] for d in webhook.json()][3:] == ["digest"]  # the digest only
    bare = tmp_path / "bare.toml"
    bare.write_text("[tool.pgdrill.monitor]\n")
    assert main(["check", "--repo", fresh.url, "--config", str(bare), "--digest"]) == 2
    assert "--digest needs an email or webhook receiver" in capsys.readouterr().err
