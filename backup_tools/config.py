"""pgdrill settings in TOML files: a [tool.pgdrill.<name>] table (pyproject.toml) or a top-level [<name>] one."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from backup_tools.errors import UsageError


def read_toml(path: Path, *, what: str = "config file") -> dict[str, Any]:
    """Parse a TOML file; an unreadable or invalid file is a UsageError naming it (`what` says which file)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}; check the path and its permissions") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{what} {path} is not valid TOML ({e}); fix the file") from e


def pgdrill_section(doc: dict[str, Any], name: str, *, source: Path | str) -> dict[str, Any] | None:
    """The [tool.pgdrill.<name>] table of a parsed document, else its top-level [<name>] table, else None."""
    tool = doc.get("tool", {}).get("pgdrill", {})
    section = tool[name] if name in tool else doc.get(name)
    if section is not None and not isinstance(section, dict):
        raise UsageError(f"[tool.pgdrill.{name}] in {source} must be a table")
    return section


def load_pgdrill_section(path: Path, name: str, *, what: str = "config file") -> dict[str, Any] | None:
    """Read [tool.pgdrill.<name>] (or a top-level [<name>]) from a TOML file; None when the file has neither."""
    return pgdrill_section(read_toml(path, what=what), name, source=path)
