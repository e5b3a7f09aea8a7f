"""load_pgdrill_section: the one reader of [tool.pgdrill.<name>] / top-level [<name>] TOML tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup_tools.config import load_pgdrill_section
from backup_tools.errors import UsageError


def test_tool_table_wins_over_top_level_and_absence_is_none(tmp_path: Path) -> None:
    path = tmp_path / "pgdrill.toml"
    path.write_text("[tool.pgdrill.retention]\ndaily = 3\n[retention]\ndaily = 9\n[monitor]\nmax_age = '2h'\n")
    assert load_pgdrill_section(path, "retention") == {"daily": 3}
    assert load_pgdrill_section(path, "monitor") == {"max_age": "2h"}
    assert load_pgdrill_section(path, "targets") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("[retention\n", "retention config .* is not valid TOML", id="toml"),
        pytest.param(b"\xff\xfe[retention]", "retention config .* is not valid TOML", id="encoding"),
        pytest.param("retention = [1, 2]\n", r"\[tool.pgdrill.retention\] in .* must be a table", id="not-a-table"),
        pytest.param(None, "cannot read retention config .*: No such file", id="absent"),
    ],
)
def test_bad_files_are_one_clear_usage_error(tmp_path: Path, text: str | bytes | None, message: str) -> None:
    path = tmp_path / "pgdrill.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_pgdrill_section(path, "retention", what="retention config")
