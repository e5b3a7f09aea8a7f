"""Duration and target parsing: bad strings fail with a message saying what to write instead."""

from datetime import timedelta

import pytest

from backup_tools.errors import UsageError
from backup_tools.units import format_seconds, parse_duration
from fixtures.targets import load_targets, parse_targets


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100ms", 0.1), ("30s", 30), ("15min", 900), ("4h", 14400), ("1d", 86400), ("1h30min", 5400),
     ("2 hours", 7200), (" 45 ", 45), (90, 90), ("0s", 0)],
)  # fmt: skip
def test_parse_duration_accepts_common_spellings(text, expected):
    assert parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["4 hourz", "h", "fast", "1h 2x", "-5s", "5 parsecs"])
def test_parse_duration_rejects_nonsense_with_a_hint(text):
    with pytest.raises(UsageError, match="invalid duration") as info:
        parse_duration(text)
    assert "15min" in str(info.value)


def test_format_seconds_is_readable():
    assert format_seconds(0.1234) == "123 ms" and format_seconds(0.001) == "1 ms" and format_seconds(0.0055) == "5.5 ms"
    assert format_seconds(1.234) == "1.23 s"
    assert format_seconds(12.34) == "12.3 s"
    assert format_seconds(245) == "4 min 05 s"
    assert format_seconds(7380) == "2 h 03 min"
    assert format_seconds(None) == "n/a"


def test_scenario_targets_fall_back_to_default():
    targets = parse_targets(
        {"default": {"rto": "4h", "rpo": "15min"}, "corruption": {"rto": "15min"}}, source="test"
    )
    assert targets.for_scenario("corruption").rto == timedelta(minutes=15)
    assert targets.for_scenario("corruption").rpo == timedelta(minutes=15)
    assert targets.for_scenario("unknown").rto == timedelta(hours=4)


def test_bad_target_names_the_scenario_and_the_source(tmp_path):
    bad = tmp_path / "targets.toml"
    bad.write_text('[targets.accidental-deletion]\nrto = "4 hourz"\n')
    with pytest.raises(UsageError) as info:
        load_targets(pyproject=tmp_path / "none.toml", override=bad)
    assert "accidental-deletion" in str(info.value)
    assert "4 hourz" in str(info.value)
    assert str(bad) in str(info.value)


def test_unknown_target_key_is_refused():
    with pytest.raises(UsageError, match="unknown keys"):
        parse_targets({"corruption": {"rto": "1h", "rpoo": "1min"}}, source="test")


def test_project_targets_parse(pytestconfig):
    targets = load_targets(pyproject=pytestconfig.rootpath / "pyproject.toml")
    assert targets.for_scenario("accidental-deletion").rpo == timedelta(minutes=2)
    assert targets.default.rto == timedelta(hours=4)


def test_rpo_zero_means_no_acknowledged_commit_may_be_lost():
    targets = parse_targets({"predeploy-rollback": {"rto": "30min", "rpo": "0s"}}, source="test")
    assert targets.for_scenario("predeploy-rollback").max_lost_commits == 0
    assert targets.for_scenario("other").max_lost_commits is None
