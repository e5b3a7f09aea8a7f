"""Deliver failed checks to receivers: email over SMTP and JSON webhooks (Slack-compatible), with bounded retries."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from backup_tools.errors import BackupToolsError, UsageError
from backup_tools.pg.run import redact
from backup_tools.units import parse_duration

MAX_RETRIES = 5


@dataclass(frozen=True)
class Alert:
    """What to tell receivers: the event ('failed' or 'resolved'), the repository, and the checks concerned."""

    event: str
    repo: str
    host: str
    checked_at: datetime
    checks: tuple[dict[str, Any], ...]
    ok_count: int = 0
    details: str = ""  # the command that shows the details (default: `backup-tools check --repo REPO`)

    @property
    def subject(self) -> str:
        """One line: what happened where."""
        if self.event == "resolved":
            return f"[pgdrill] RESOLVED: {len(self.checks)} backup check(s) pass again for {self.repo} on {self.host}"
        if self.event == "digest":
            failing = len(self.checks) - self.ok_count
            state = "all OK" if not failing else f"{failing} FAILING"
            return (f"[pgdrill] DAILY DIGEST: {self.ok_count} of {len(self.checks)} backup check(s) OK ({state}) "
                    f"for {self.repo} on {self.host}")  # fmt: skip
        worst = "CRITICAL" if any(c["severity"] == "critical" for c in self.checks) else "WARNING"
        return f"[pgdrill] {worst}: {len(self.checks)} backup check(s) failed for {self.repo} on {self.host}"

    @property
    def text(self) -> str:
        """The subject, one line per check, and what to run for details (redacted)."""
        lines = [self.subject, ""]
        for c in self.checks:
            label = "RESOLVED" if self.event == "resolved" else "OK" if c.get("ok") else c["severity"].upper()
            lines.append(f"{label} {c['name']}: {c['message']}")
        lines += ["", f"checked at {self.checked_at.isoformat(timespec='seconds')}; {self.ok_count} check(s) ok",
                  f"details: {self.details or f'backup-tools check --repo {self.repo}'}"]  # fmt: skip
        return redact("\n".join(lines))

    def payload(self) -> dict[str, Any]:
        """Slack-compatible JSON ({"text": ...}) plus the structured results under "pgdrill"."""
        body = {"event": self.event, "repo": self.repo, "host": self.host, "checked_at": self.checked_at.isoformat(),
                "ok_count": self.ok_count, "checks": list(self.checks)}  # fmt: skip
        return {"text": self.text, "pgdrill": json.loads(redact(json.dumps(body)))}


@dataclass(frozen=True)
class Delivery:
    """The outcome of sending one alert to one receiver (its label never holds a secret)."""

    receiver: str
    ok: bool
    attempts: int
    error: str | None = None


class Receiver(Protocol):
    """Something an alert can be sent to."""

    label: str
    retries: int
    retry_delay: float

    def send(self, alert: Alert) -> None:
        """Send once; raise OSError/smtplib/urllib errors on failure, _Permanent when retrying cannot help."""


class _Permanent(Exception):
    """A delivery failure that retrying cannot fix (rejected recipient, 4xx answer, bad credentials)."""


@dataclass(frozen=True)
class EmailReceiver:
    """SMTP delivery; the password comes from an environment variable or a file, never from the config itself."""

    host: str
    to: tuple[str, ...]
    sender: str
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    timeout: float = 10.0
    retries: int = 1
    retry_delay: float = 1.0

    @property
    def label(self) -> str:
        """'email smtp://host:port' for reports."""
        return f"email smtp://{self.host}:{self.port}"

    def _password(self) -> str | None:
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise _Permanent(f"environment variable {self.password_env} (password_env) is not set")
            return value
        if self.password_file:
            try:
                return Path(self.password_file).read_text().strip()
            except OSError as e:
                raise _Permanent(f"cannot read password_file {self.password_file}: {e.strerror}") from e
        return None

    def send(self, alert: Alert) -> None:
        """Connect, optionally STARTTLS and log in, and send one message to every recipient."""
        msg = EmailMessage()
        msg["Subject"], msg["From"], msg["To"] = alert.subject, self.sender, ", ".join(self.to)
        msg["Date"], msg["Message-ID"] = formatdate(localtime=False), make_msgid(domain=self.sender.split("@")[-1])
        msg.set_content(alert.text + "\n")
        password = self._password()
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise _Permanent(f"cannot load ca_file {self.ca_file}: {e}; point it at a PEM CA bundle") from e
        try:
            if self.ssl:
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.starttls and not self.ssl:
                    smtp.starttls(context=context)
                if self.username:
                    smtp.login(self.username, password or "")
                smtp.send_message(msg)
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as e:
            raise _Permanent(f"{type(e).__name__}: {e}") from e
        except smtplib.SMTPNotSupportedError as e:
            raise _Permanent(f"the server does not support STARTTLS or AUTH ({e}); check starttls/username") from e


@dataclass(frozen=True)
class WebhookReceiver:
    """An HTTP POST of the alert as JSON; the URL (often a secret token) is never printed beyond its host."""

    url: str
    timeout: float = 10.0
    retries: int = 2
    retry_delay: float = 1.0

    @property
    def label(self) -> str:
        """'webhook https://host/…' for reports: the path may be a token."""
        parts = urlsplit(self.url)
        return f"webhook {parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"

    def send(self, alert: Alert) -> None:
        """POST the payload; 5xx, 429 and network errors may be retried, other answers are final."""
        data = json.dumps(alert.payload()).encode()
        request = urllib.request.Request(self.url, data=data, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "pgdrill-backup-tools"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 (http(s) checked)
                answer.read()
        except urllib.error.HTTPError as e:
            if e.code == 429 or e.code >= 500:
                raise OSError(f"HTTP {e.code} {e.reason}") from e
            raise _Permanent(f"HTTP {e.code} {e.reason}: check the webhook URL and its token") from e
        except urllib.error.URLError as e:
            raise OSError(f"{e.reason}") from e


def deliver(
    alert: Alert, receivers: Sequence[Receiver], *, sleep: Callable[[float], Any] = time.sleep
) -> list[Delivery]:
    """Send the alert to every receiver, retrying transient failures a bounded number of times; never raises."""
    out = []
    for receiver in receivers:
        attempts, error = 0, None
        for attempt in range(receiver.retries + 1):
            attempts = attempt + 1
            try:
                receiver.send(alert)
                error = None
                break
            except _Permanent as e:
                error = str(e)
                break
            except (OSError, smtplib.SMTPException, BackupToolsError) as e:
                error = str(e) or type(e).__name__
                if attempt < receiver.retries:
                    sleep(receiver.retry_delay * 2**attempt)
            except Exception as e:  # a bug or odd answer in one receiver must not hide the check results
                error = f"{type(e).__name__}: {e}"
                break
        out.append(Delivery(receiver.label, error is None, attempts, redact(error) if error else None))
    return out


def receivers_from_config(config: Mapping[str, Any]) -> list[Receiver]:
    """Receivers from the monitor config's email and webhook tables (each a table or a list of tables)."""
    out: list[Receiver] = []
    for kind, build in (("email", _email), ("webhook", _webhook)):
        tables = config.get(kind, [])
        for table in [tables] if isinstance(tables, Mapping) else tables:
            if not isinstance(table, Mapping):
                raise UsageError(f"[tool.pgdrill.monitor.{kind}] must be a table (or a list of tables)")
            out.append(build(dict(table)))
    return out


def _common(kind: str, table: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out = {}
    if "timeout" in table:
        out["timeout"] = parse_duration(table.pop("timeout")).total_seconds()
    if "retry_delay" in table:
        out["retry_delay"] = parse_duration(table.pop("retry_delay")).total_seconds()
    if "retries" in table:
        retries = table.pop("retries")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
            raise UsageError(f"{kind}.retries must be a whole number from 0 to {MAX_RETRIES}")
        out["retries"] = retries
    return {**defaults, **out}


def _email(table: dict[str, Any]) -> EmailReceiver:
    if "password" in table:
        raise UsageError("email.password is not allowed in a config file; use password_env or password_file")
    common = _common("email", table, {})
    missing = [k for k in ("host", "from", "to") if not table.get(k)]
    if missing:
        raise UsageError(f"[tool.pgdrill.monitor.email] needs {', '.join(missing)} (e.g. host = 'localhost')")
    to = table.pop("to")
    to = (to,) if isinstance(to, str) else tuple(to)
    values = {"host": table.pop("host"), "sender": table.pop("from"), "to": to, **common}
    for key in ("port", "starttls", "ssl", "username", "password_env", "password_file", "ca_file"):
        if key in table:
            values[key] = table.pop(key)
    if table:
        raise UsageError(f"unknown key(s) {', '.join(sorted(table))} in [tool.pgdrill.monitor.email]")
    if not isinstance(values.get("port", 25), int):
        raise UsageError("email.port must be a number, e.g. 587")
    return EmailReceiver(**values)


def _webhook(table: dict[str, Any]) -> WebhookReceiver:
    common = _common("webhook", table, {})
    url = table.pop("url", None)
    url_env = table.pop("url_env", None)
    if table:
        raise UsageError(f"unknown key(s) {', '.join(sorted(table))} in [tool.pgdrill.monitor.webhook]")
    if url_env:
        url = os.environ.get(url_env)
        if not url:
            raise UsageError(f"environment variable {url_env} (webhook.url_env) is not set; export the webhook URL")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise UsageError("webhook needs url (or url_env) with an http:// or https:// URL")
    return WebhookReceiver(url=url, **common)


def local_host() -> str:
    """This machine's name, to say where the check ran."""
    return socket.gethostname()
