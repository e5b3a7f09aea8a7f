"""Purpose labels on backups (--label daily|weekly|predeploy|...) and their keep rules in [retention.labels]."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from backup_tools.errors import UsageError

LABEL = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")




@dataclass(frozen=True)
class LabelRule:
    """Keep the newest `count` good backups of a label, or those younger than `age`."""

    label: str
    count: int | None = None
    age: timedelta | None = None

    def __str__(self) -> str:
        if self.count is not None:
            return f"{self.label} = newest {self.count}"
        return f"{self.label} = {self.age.days}d" if self.age and not self.age.seconds else f"{self.label} = {self.age}"


def parse_label_rules(config: Mapping[str, Any] | None) -> tuple[LabelRule, ...]:
    """Rules from a table such as {"predeploy": "30d", "daily": 7}: a whole number keeps the newest N, a duration an age."""
    from backup_tools.units import parse_duration

    rules = []
    for label, value in (config or {}).items():
        if not LABEL.fullmatch(str(label)):
            raise UsageError(f"retention label {label!r} is invalid: use lower-case letters, digits, '-' or '_'")
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= 100_000:
                raise UsageError(f"retention label {label} = {value}: keep 0..100000 backups")
            rules.append(LabelRule(label, count=value))
        elif isinstance(value, str):
            age = parse_duration(value)
            if age <= timedelta(0):
                raise UsageError(f'retention label {label} = {value!r}: the age must be positive, e.g. "30d"')
            rules.append(LabelRule(label, age=age))
        else:
            raise UsageError(
                f'retention label {label} = {value!r}: use a number of backups (daily = 7) or an age (predeploy = "30d")'
            )
    return tuple(rules)
