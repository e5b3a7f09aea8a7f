"""Run PostgreSQL tools safely: argument lists, closed stdin, captured stderr, time-outs, redacted messages."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from backup_tools.errors import BinaryNotFound, ToolFailed

_SECRET_PATTERNS = (
    (re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I), r"\1***"),
    (re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]*@", re.I), r"\1***@"),
    (re.compile(r"(PGPASSWORD=)\S+"), r"\1***"),
    (re.compile(r"(AWS_SECRET_ACCESS_KEY=)\S+"), r"\1***"),
)


def redact(text: str) -> str:
    """Hide passwords in DSNs, URLs and environment assignments."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def tail(text: str, lines: int = 12) -> str:
    """The last lines of a tool's output, redacted, for an error message."""
    return redact("\n".join(text.strip().splitlines()[-lines:]))


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 3600,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run one program with stdin closed and output captured; raise ToolFailed (with stderr) on failure."""
    argv = [os.fspath(a) for a in args]
    program = Path(argv[0]).name
    full_env = {**os.environ, **(env or {})}
    try:
        done = subprocess.run(
            argv, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError as e:
        raise BinaryNotFound(f"{argv[0]} not found; install it or point --pg-bin/PG_BIN at its directory") from e
    except subprocess.TimeoutExpired as e:
        output = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise ToolFailed(f"{program} did not finish within {timeout:.0f} s and was stopped: {tail(output)}") from e
    if check and done.returncode != 0:
        raise ToolFailed(
            f"{program} failed (exit {done.returncode}): {tail(done.stderr or done.stdout) or 'no output'}"
        )
    return done
