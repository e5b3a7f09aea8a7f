"""The erasure line of `backup-tools check`: backups that still hold subjects erased more than N days ago."""

from __future__ import annotations

from datetime import datetime, timedelta

from backup_tools.lifecycle.retention import catalog_time
from backup_tools.monitor.checks import CheckOutcome
from backup_tools.repo.base import Repository


def erasure_outcome(repo: Repository, ledger_url: str | None, *, max_days: int, now: datetime) -> CheckOutcome | None:
    """Critical when a good backup taken before an erasure request is still kept more than max_days after it."""
    if not ledger_url:
        return None
    from backup_tools.restore.erasure import read_ledger

    requests = [datetime.fromisoformat(e["requested_at"]) for e in read_ledger(ledger_url)]
    overdue = [t for t in requests if now - t > timedelta(days=max_days)]
    holding = sorted({r.id for r in repo.list_backups() if r.is_good for t in overdue if catalog_time(r) < t})
    figures = {"requests": len(requests), "overdue_requests": len(overdue), "backups_holding": holding}
    if holding:
        return CheckOutcome(
            "erasure", False, "critical",
            f"{len(holding)} backup(s) taken before erasure requests older than {max_days} d still hold the erased "
            f"subjects (oldest {holding[0]}): prune them (retention shorter than {max_days} d), or rekey and destroy "
            "the old key where the repository is encrypted per backup; restores replay the ledger meanwhile",
            figures,
        )  # fmt: skip
    return CheckOutcome(
        "erasure",
        True,
        "ok",
        f"no backup older than an erasure request past {max_days} d ({len(requests)} requests)",
        figures,
    )
