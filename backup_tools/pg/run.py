"""Run PostgreSQL tools safely: argument lists, closed stdin, captured stderr, time-outs, redacted messages."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from backup_tools.errors import BinaryNotFound, ToolFailed, VersionMismatch
from backup_tools.pg.bin import PgBin, tool_version
from backup_tools.streams import widen_pipe

T = TypeVar("T")
Argv = Sequence[str | os.PathLike[str]]
Env = Mapping[str, str | None]

_SECRET_PATTERNS = (
    (re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I), r"\1***"),
    (re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]*@", re.I), r"\1***@"),
    (re.compile(r"(PGPASSWORD=)\S+"), r"\1***"),
    (re.compile(r"(AWS_SECRET_ACCESS_KEY=)\S+"), r"\1***"),
)
_ERROR_LINE = re.compile(r"\b(error|fatal|panic|failed)\b", re.I)


def redact(text: str) -> str:
    """Hide passwords in DSNs, URLs and environment assignments."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def tail(text: str, lines: int = 12) -> str:
    """The last lines of a tool's output, redacted, for an error message."""
    return redact("\n".join(text.strip().splitlines()[-lines:]))


def merged_env(env: Env | None) -> dict[str, str]:
    """The inherited environment with env applied; a value of None removes that variable."""
    full = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return full


def run(
    args: Argv,
    *,
    env: Env | None = None,
    timeout: float | None = 3600,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run one program with stdin closed and output captured; raise ToolFailed (with stderr) on failure."""
    argv = [os.fspath(a) for a in args]
    program = Path(argv[0]).name
    try:
        done = subprocess.run(
            argv,
            env=merged_env(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
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


@dataclass(frozen=True)
class StageResult:
    """How one stage of a pipeline ended."""

    program: str
    returncode: int
    stderr: str


@dataclass(frozen=True)
class PipelineResult(Generic[T]):
    """The consumer's return value (or the last stage's stdout) and every stage's outcome."""

    value: T
    stages: tuple[StageResult, ...]
    seconds: float


def run_pipeline(
    stages: Sequence[Argv],
    *,
    consumer: Callable[[IO[bytes]], T] | None = None,
    env: Env | None = None,
    timeout: float | None = None,
    cwd: Path | None = None,
) -> PipelineResult[Any]:
    """Run `a | b | …` without a shell, stream the last stdout into consumer, and fail if ANY stage fails.

    The first stage's stdin is closed. Each stage's stderr is captured into the ToolFailed it causes.
    On a time-out or a consumer error every stage is killed. This is `set -o pipefail`, done right.
    """
    if not stages:
        raise ValueError("run_pipeline needs at least one stage")
    argvs = [[os.fspath(a) for a in stage] for stage in stages]
    names = [Path(argv[0]).name for argv in argvs]
    full_env, started = merged_env(env), time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    errs: list[IO[bytes]] = []
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        _kill_all(procs)

    with contextlib.ExitStack() as stack:
        stack.callback(_reap, procs)  # on every way out: no stage outlives this call
        for i, argv in enumerate(argvs):
            errs.append(stack.enter_context(tempfile.TemporaryFile()))
            stdin = procs[-1].stdout if procs else subprocess.DEVNULL
            try:
                proc = subprocess.Popen(
                    argv, stdin=stdin, stdout=subprocess.PIPE, stderr=errs[-1], env=full_env, cwd=cwd
                )
            except OSError as e:
                raise BinaryNotFound(
                    f"could not run {argv[0]} (stage {i + 1} of `{' | '.join(names)}`): {e.strerror}; "
                    "install it or point --pg-bin/PG_BIN at its directory"
                ) from e
            if procs and procs[-1].stdout is not None:
                procs[-1].stdout.close()  # the next stage owns the pipe now; EOF and SIGPIPE propagate
            procs.append(proc)
        if timeout:
            timer = threading.Timer(timeout, expire)
            timer.daemon = True
            timer.start()
            stack.callback(timer.cancel)
        last = procs[-1].stdout
        assert last is not None
        widen_pipe(last.fileno())
        try:
            value = consumer(last) if consumer is not None else last.read()
        except BaseException as e:
            failed = _failed_before_kill(procs)
            _reap(procs)
            if timed_out.is_set():
                raise _timeout_error(timeout, errs, names) from e
            if failed is not None:
                raise _stage_error(failed, procs, errs, names) from e
            raise
        finally:
            last.close()
        for proc in procs:
            proc.wait()
        if timed_out.is_set():
            raise _timeout_error(timeout, errs, names)
        for i, proc in enumerate(procs):
            if proc.returncode != 0:
                raise _stage_error(i, procs, errs, names)
        results = tuple(StageResult(n, p.returncode, _read(e)) for n, p, e in zip(names, procs, errs, strict=True))
    return PipelineResult(value, results, time.monotonic() - started)


def _stage_error(i: int, procs: list[subprocess.Popen[bytes]], errs: list[IO[bytes]], names: list[str]) -> ToolFailed:
    code = procs[i].returncode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"failed (exit {code})"
    where = (
        f" (stage {i + 1} of `{' | '.join(names)}`: the pipeline's output is incomplete and was not used)"
        if len(procs) > 1
        else ""
    )
    return ToolFailed(f"{names[i]} {how}: {error_summary(_read(errs[i])) or 'no output'}{where}")


def error_summary(text: str, *, limit: int = 6) -> str:
    """The error lines of a tool's output (else its last lines), redacted, for one message."""
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    chosen = errors[:limit] if errors else lines[-limit:]
    return redact(" / ".join(chosen))


def _timeout_error(timeout: float | None, errs: list[IO[bytes]], names: list[str]) -> ToolFailed:
    stderr = "; ".join(f"{n}: {tail(_read(e), 3)}" for n, e in zip(names, errs, strict=False) if _read(e).strip())
    return ToolFailed(
        f"`{' | '.join(names)}` did not finish within {timeout or 0:g} s and was stopped"
        + (f" ({stderr})" if stderr else "")
        + "; its output is incomplete. Raise the time-out or look for what blocked it (locks, network)"
    )


def _failed_before_kill(procs: list[subprocess.Popen[bytes]]) -> int | None:
    """Index of the first stage that has already exited non-zero on its own, if any."""
    time.sleep(0.05)  # a stage that just died is usually why the consumer failed; let its status arrive
    for i, proc in enumerate(procs):
        if proc.poll() not in (None, 0):
            return i
    return None


def _kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def _reap(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill the stages still running and wait for all of them."""
    _kill_all(procs)
    for proc in procs:
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _read(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


def check_tool_version(
    tool: Path, server_version_num: int, *, minimum_major: int | None = None, known: PgBin | None = None
) -> int:
    """Refuse a tool older than the server's major version (or minimum_major); return the tool's major.

    known: the PgBin the tool comes from; its programs share the version find_pg_bin read (one probe per run).
    """
    same_dir = known is not None and tool.parent == known.bindir
    version, major = (known.version, known.major) if known is not None and same_dir else tool_version(tool)
    server_major = server_version_num // 10000  # 180001 -> 18; 90624 (9.6) -> 9
    needed = max(server_major, minimum_major or 0)
    if major < needed:
        why = f"the server runs PostgreSQL {server_major}" if needed == server_major else f"it needs {needed}"
        raise VersionMismatch(
            f"{tool.name} {version} ({tool}) is older than PostgreSQL {needed}: {why}, and an older {tool.name} "
            "cannot be trusted with a newer server (GitLab 2017: such backups silently failed for days). "
            f"Use the PostgreSQL {needed} (or newer) client programs: pass --pg-bin/PG_BIN pointing at them"
        )
    return major
