"""`kturn report --plot FILE.png`: one figure a person would rather look at than read. Four panels: the
funnel per turn, each trajectory's reward over its turns, how rewards moved from turn to turn, and
the distribution of answer lengths. matplotlib on its Agg backend (no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from orchestrator.report import FUNNEL_LABELS, LONG_CHARS, PROGRESS, SHORT_CHARS  # noqa: E402

PROGRESS_COLOURS = {"improved": "#2a9d8f", "held": "#bbbbbb", "regressed": "#e76f51"}


def render(report: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    figure, axes = plt.subplots(2, 2, figsize=(13, 9), constrained_layout=True)
    figure.suptitle(f"kturn run {report['run']} · {report['status']} · {report['trajectories']['count']} trajectories · {report['overall']['turns']} turns")
    _funnel(axes[0][0], report)
    _reward_lines(axes[0][1], rows)
    _progress(axes[1][0], report)
    _lengths(axes[1][1], report, rows)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _funnel(ax, report: dict[str, Any]) -> None:
    labels = list(FUNNEL_LABELS.values())
    turns = report["turns"]
    width = 0.8 / max(len(turns), 1)
    x = np.arange(len(labels))
    for i, row in enumerate(turns):
        values = [100 * (row["funnel"][label] or 0) for label in labels]
        bars = ax.bar(x + (i - (len(turns) - 1) / 2) * width, values, width, label=f"turn {row['turn']} (n={row['evaluated']})")
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 110)
    ax.set_ylabel("% of evaluated turns")
    ax.set_title("funnel per turn")
    ax.legend(fontsize=8)


def _reward_lines(ax, rows: list[dict[str, Any]]) -> None:
    trajectories: dict[int, list[tuple[int, float]]] = {}
    for row in rows:
        if row["reward"] is not None:
            trajectories.setdefault(row["trajectory_id"], []).append((row["turn_index"], row["reward"]))
    rng = np.random.default_rng(0)  # jitter, so identical trajectories do not hide each other
    for points in trajectories.values():
        points.sort()
        turns, rewards = zip(*points)
        ax.plot(np.array(turns) + rng.uniform(-0.06, 0.06), rewards, color="#457b9d", alpha=0.35, marker="o", markersize=3, linewidth=1)
    by_turn: dict[int, list[float]] = {}
    for points in trajectories.values():
        for turn, reward in points:
            by_turn.setdefault(turn, []).append(reward)
    if by_turn:
        turns = sorted(by_turn)
        ax.plot(turns, [np.mean(by_turn[t]) for t in turns], color="black", linewidth=2.5, marker="s", label="mean reward")
        ax.set_xticks(turns)
        ax.legend(fontsize=8)
    ax.set_xlabel("turn")
    ax.set_ylabel("reward")
    ax.set_title("reward per trajectory over its turns")


def _progress(ax, report: dict[str, Any]) -> None:
    groups = [(f"{row['turn'] - 1}→{row['turn']}", row["progress"]) for row in report["turns"] if row["turn"] > 0]
    groups.append(("first→last", report["trajectories"]["first_to_last"]))
    labels = [label for label, _ in groups]
    left = np.zeros(len(groups))
    for kind in PROGRESS:
        counts = np.array([counts[kind] for _, counts in groups], dtype=float)
        bars = ax.barh(labels, counts, left=left, color=PROGRESS_COLOURS[kind], label=kind)
        ax.bar_label(bars, labels=[str(int(c)) if c else "" for c in counts], label_type="center", fontsize=8)
        left += counts
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trajectories")
    ax.set_title("reward from turn to turn")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)


def _lengths(ax, report: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    lengths = [(row["answer_chars"], row["degenerate"] == 1) for row in rows if row["answer_chars"] is not None]
    if not lengths:
        ax.text(0.5, 0.5, "no answers yet", ha="center", va="center", transform=ax.transAxes)
        return
    chars = np.array([max(n, 1) for n, _ in lengths])
    degenerate = np.array([d for _, d in lengths])
    low = min(chars.min(), SHORT_CHARS) / 2  # both thresholds always in view
    bins = np.logspace(np.log10(low), np.log10(max(chars.max(), LONG_CHARS) * 2), 30)
    ax.hist([chars[~degenerate], chars[degenerate]], bins=bins, stacked=True, color=["#457b9d", "#e63946"], label=["clean", "degenerate"])
    for limit in (SHORT_CHARS, LONG_CHARS):
        ax.axvline(limit, color="black", linestyle="--", linewidth=1)
    shares = report["overall"]["answer_chars"]
    ax.set_xscale("log")
    ax.set_xlabel("answer length (characters, log scale)")
    ax.set_ylabel("turns")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"answer lengths: {100 * shares['short_share']:.0f}% < {SHORT_CHARS}, {100 * shares['long_share']:.0f}% > {LONG_CHARS}")
    ax.legend(fontsize=8)
