"""The residency line of `backup-tools check`: critical when the repository is outside the allowed regions."""

from __future__ import annotations

from backup_tools.monitor.checks import CheckOutcome
from backup_tools.repo.base import Repository
from backup_tools.repo.residency import allowed_regions, find_violation, live_regions, recorded_regions


def check_outcome(repo: Repository, option: str | None) -> CheckOutcome | None:
    """The `check` line for residency (a CheckOutcome): critical outside the allowed regions."""
    allowed = allowed_regions(option)
    if not allowed:
        return None
    problem = find_violation(repo, allowed, record=False)
    regions = {"allowed": list(allowed), "recorded": list(recorded_regions(repo, record=False))}
    if problem:
        return CheckOutcome(
            "residency", False, "critical", problem + "; move the backups or fix the allowed list", regions
        )
    return CheckOutcome("residency", True, "ok", f"in {', '.join(regions['recorded'] or live_regions(repo))}", regions)
