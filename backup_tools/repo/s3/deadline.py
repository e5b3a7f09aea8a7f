"""Deadlines for S3 requests: each request (all its attempts) ends within a bound, so a hanging endpoint fails fast.

botocore bounds one socket wait (read_timeout) but not a request with its retries, so a stuck endpoint
used to cost attempts x read_timeout per request (90 s), and as much again for each clean-up request.
Here every request gets an overall deadline (`--s3-timeout`, $PGDRILL_S3_TIMEOUT, default 20 s): each
attempt waits at most deadline / attempts, and no new attempt starts once the deadline has passed.
Clean-up after a failure (FAILED catalog mark, lock release, removing partial objects) uses a short
deadline of its own (CLEANUP_SECONDS, one attempt), so a command ends within about a minute even when
the endpoint stops answering in the middle of an upload.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ReadTimeoutError

from backup_tools.errors import UsageError

TIMEOUT_ENV = "PGDRILL_S3_TIMEOUT"
DEFAULT_SECONDS = 20.0
CLEANUP_SECONDS = 5.0


class DeadlineExceeded(BotoCoreError):
    """An S3 request did not finish within its overall deadline."""

    fmt = "{operation} got no answer within its {seconds:g}s deadline"


def timeout_seconds(value: float | str | None = None) -> float:
    """The overall deadline of one S3 request: value, else $PGDRILL_S3_TIMEOUT, else 20 s."""
    raw = value if value is not None else os.environ.get(TIMEOUT_ENV) or DEFAULT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise UsageError(
            f"S3 timeout {raw!r} is not a number of seconds between 0 and 3600 (--s3-timeout / {TIMEOUT_ENV})"
        )
    return seconds


class Deadline:
    """Registers on a boto3 client: each API call (per thread) must finish its attempts within `seconds`.

    attempt_seconds: what one attempt may take (the client's read timeout); a retry that could not finish
    before the deadline is not started, so the retry back-off cannot carry a request past it either.
    """

    def __init__(self, seconds: float, *, attempt_seconds: float):
        self.seconds, self.attempt_seconds = seconds, attempt_seconds
        self._local = threading.local()

    def install(self, client: Any) -> Any:
        """Hook the client's events; return it."""
        client.meta.events.register("before-call.s3", self._start)
        client.meta.events.register("before-send.s3", self._check)
        client.meta.events.register_first("needs-retry.s3", self._retry)
        return client

    def _retry(self, response: Any = None, caught_exception: Any = None, **_: Any) -> None:
        failed = caught_exception is not None or (response is not None and response[0].status_code >= 500)
        until = getattr(self._local, "until", None)
        if failed and until is not None and time.monotonic() + self.attempt_seconds > until:
            if caught_exception is not None and not isinstance(caught_exception, ReadTimeoutError):
                raise caught_exception  # no retry left: report the real cause (refused connection, reset ...)
            raise DeadlineExceeded(operation=self._local.operation, seconds=self.seconds)

    def _start(self, model: Any = None, **_: Any) -> None:
        self._local.until = time.monotonic() + self.seconds
        self._local.operation = getattr(model, "name", "S3 request")

    def _check(self, **_: Any) -> None:
        until = getattr(self._local, "until", None)
        if until is not None and time.monotonic() > until:
            raise DeadlineExceeded(operation=self._local.operation, seconds=self.seconds)
