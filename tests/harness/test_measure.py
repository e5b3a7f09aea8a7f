"""RPO and RTO arithmetic exactly as DESIGN.md defines them."""

from datetime import UTC, datetime, timedelta

from fixtures.measure import Stopwatch, measure_rpo, measure_rto
from fixtures.ticker import Tick

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def ledger(n: int, step: float = 0.1) -> list[Tick]:
    return [Tick(seq, T0 + timedelta(seconds=seq * step)) for seq in range(1, n + 1)]


def test_rpo_is_time_from_newest_surviving_tick_to_failure():
    ticks = ledger(20)
    t_fail = T0 + timedelta(seconds=1.05)  # ticks 1..10 committed before
    result = measure_rpo(ticks, present=set(range(1, 9)), t_fail=t_fail)
    assert result.newest_kept_seq == 8
    assert abs(result.rpo_seconds - 0.25) < 1e-9
    assert result.acknowledged_before_failure == 10
    assert result.lost_before_failure == 2
    assert result.lost_seqs == (9, 10)
    assert result.discarded_after_failure == 10


def test_zero_loss_when_every_tick_before_failure_survives():
    ticks = ledger(20)
    t_fail = T0 + timedelta(seconds=1.05)
    result = measure_rpo(ticks, present=set(range(1, 11)), t_fail=t_fail)
    assert result.lost_before_failure == 0
    assert abs(result.rpo_seconds - 0.05) < 1e-9


def test_ticks_kept_after_failure_are_counted_not_discarded():
    ticks = ledger(20)
    result = measure_rpo(ticks, present=set(range(1, 21)), t_fail=T0 + timedelta(seconds=1.05))
    assert result.discarded_after_failure == 0
    assert result.kept_after_failure == 10


def test_nothing_survived_means_unbounded_rpo():
    result = measure_rpo(ledger(5), present=set(), t_fail=T0 + timedelta(seconds=10))
    assert result.rpo_seconds is None
    assert result.lost_before_failure == 5


def test_a_hole_in_the_middle_counts_as_lost_even_if_newer_ticks_survived():
    result = measure_rpo(ledger(10), present={1, 2, 4, 5}, t_fail=T0 + timedelta(seconds=0.55))
    assert result.lost_seqs == (3,)
    assert result.newest_kept_seq == 5


def test_rto_and_phases():
    assert measure_rto(T0, T0 + timedelta(seconds=42.5)) == 42.5
    watch = Stopwatch()
    with watch.phase("restore"):
        pass
    try:
        with watch.phase("verify"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert [p.name for p in watch.phases] == ["restore", "verify"]
    assert all(p.seconds >= 0 for p in watch.phases)
