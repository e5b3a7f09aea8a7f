"""Charts for the report, drawn by matplotlib (Agg, no pyplot state) as inline SVG with real text."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from backup_tools.units import format_seconds  # noqa: E402

PASS, FAIL, OTHER, TARGET = "#1a7f37", "#cf222e", "#8c959f", "#bc4c00"
PHASE_COLOURS = ("#8c959f", "#0969da", "#8250df", "#1b7c83", "#bf3989", "#9a6700", "#54aeff", "#2da44e")
_RC = {"svg.fonttype": "none", "svg.hashsalt": "pgdrill", "font.size": 9, "font.family": "DejaVu Sans"}


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype so it can sit inline in HTML


def tick(value: float, _pos: object = None) -> str:
    """An axis label for seconds: '250 ms' below a second, else as the report writes durations."""
    if value < 0:
        return ""
    if 0 < value < 1:
        return f"{value * 1000:.3g} ms"
    return format_seconds(value)


def _seconds_axis(ax: Any) -> None:
    ax.xaxis.set_major_formatter(FuncFormatter(tick))


def phase_timeline_svg(phases: Sequence[dict[str, Any]], *, rto: float | None, target_rto: float | None) -> str:
    """A Gantt-style bar per phase, from t_fail (0) to recovery, with the RTO and (when in range) the target."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.5, 0.9 + 0.32 * max(1, len(phases))))
        ax = fig.add_subplot()
        offset = 0.0
        for i, phase in enumerate(phases):
            start = phase.get("start_seconds")
            start = offset if start is None else start
            width = max(float(phase["seconds"]), 0.0)
            ax.barh(i, width, left=start, height=0.6, color=PHASE_COLOURS[i % len(PHASE_COLOURS)])
            ax.annotate(format_seconds(width), (start + width, i), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=8)  # fmt: skip
            offset = start + width
        ax.set_yticks(range(len(phases)), [p["name"] for p in phases])
        ax.invert_yaxis()
        end = max(offset, rto or 0.0)
        if rto is not None:
            ax.axvline(rto, color=PASS if target_rto is None or rto <= target_rto else FAIL, linewidth=1.5)
            ax.annotate(f"recovered: RTO {format_seconds(rto)}", (rto, 1.0), xycoords=ax.get_xaxis_transform(),
                        xytext=(-4, 2), textcoords="offset points", ha="right", va="bottom", fontsize=8)  # fmt: skip
        if target_rto is not None and target_rto <= end * 1.5:
            ax.axvline(target_rto, color=TARGET, linestyle="--", linewidth=1.2)
            ax.annotate(f"target {format_seconds(target_rto)}", (target_rto, 0.0), xycoords=ax.get_xaxis_transform(),
                        xytext=(4, 3), textcoords="offset points", color=TARGET, fontsize=8)  # fmt: skip
            end = max(end, target_rto)
        elif target_rto is not None:
            ax.text(0.99, 0.02, f"RTO target {format_seconds(target_rto)} (far to the right)", transform=ax.transAxes,
                    ha="right", va="bottom", color=TARGET, fontsize=8)  # fmt: skip
        ax.set_xlim(0, end * 1.18 or 1)
        _seconds_axis(ax)
        ax.set_xlabel("time since the failure was injected (t_fail)")
        ax.spines[["top", "right"]].set_visible(False)
        return _svg(fig)


def _missed(point: dict[str, Any], key: str) -> bool:
    """Whether a run's figure missed its target; an RPO target of 0 is judged on lost commits, not seconds."""
    value, target = point.get(key), point.get(f"target_{key}")
    if key == "rpo_seconds" and target == 0:
        return bool(point.get("lost_commits"))
    return target is not None and value is not None and value > target


def _trend_axis(ax: Any, runs: Sequence[dict[str, Any]], key: str, target: float | None, title: str) -> None:
    xs = list(range(1, len(runs) + 1))
    values = [r.get(key) for r in runs]
    measured = [(x, v, r) for x, v, r in zip(xs, values, runs, strict=True) if v is not None]
    if measured:
        ax.plot([m[0] for m in measured], [m[1] for m in measured], color=OTHER, linewidth=1, zorder=1)
    for outcome, colour, marker in (("met", PASS, "o"), ("missed", FAIL, "X")):
        pts = [(x, v) for x, v, r in measured if _missed(r, key) == (outcome == "missed")]
        if pts:
            dots = ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colour, marker=marker, s=36, zorder=2,
                              label=f"target {outcome}")  # fmt: skip
            dots.set_gid(f"{key}-{outcome}")  # the SVG group's id, so tests can count the points
    top = max((v for _, v, _ in measured), default=1.0) or 1.0
    if key == "rpo_seconds" and target == 0:
        label = "target: 0 lost commits (● none lost)"
    elif target is not None and target <= top * 2:
        ax.axhline(target, color=TARGET, linestyle="--", linewidth=1.2)
        top = max(top, target)
        label = f"- - target {format_seconds(target)}"
    else:
        label = f"target {format_seconds(target)} (far above)" if target is not None else ""
    ax.text(0.99, 0.98, label, transform=ax.transAxes, ha="right", va="top", color=TARGET, fontsize=8)
    ax.set_ylim(0, top * 1.25)
    ax.set_xlim(0.5, max(len(runs), 1) + 0.5)
    if len(runs) <= 8 and all(r.get("finished_at") for r in runs):
        ax.set_xticks(xs, [str(r["finished_at"])[5:16].replace("T", "\n") for r in runs], fontsize=7)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    ax.yaxis.set_major_formatter(FuncFormatter(tick))
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_xlabel("run (oldest → newest)")
    ax.spines[["top", "right"]].set_visible(False)


def trend_svg(runs: Sequence[dict[str, Any]], *, label: str) -> str:
    """RTO and RPO of one scenario/method over its last runs (oldest first); red X where a figure missed its target."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8.5, 2.3))
        rto_ax, rpo_ax = fig.subplots(1, 2)
        last = runs[-1] if runs else {}
        _trend_axis(rto_ax, runs, "rto_seconds", last.get("target_rto_seconds"), f"RTO — {label}")
        _trend_axis(rpo_ax, runs, "rpo_seconds", last.get("target_rpo_seconds"), f"RPO — {label}")
        fig.subplots_adjust(wspace=0.3)
        return _svg(fig)
