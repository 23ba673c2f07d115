"""Plots: the timeline of one or more queries (saliency, predicted and true moments) and learning curves.

Both functions take plain data (the prediction JSON Lines format of ``sgdetr_hf.metrics`` and the
training history of :class:`~sgdetr_hf.training.checkpointing.TrainerState`), draw with
matplotlib's object API (no pyplot global state, no display needed) and write PNGs atomically.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .files import atomic_write_bytes

PREDICTION_COLOR = "tab:orange"
TRUTH_COLOR = "tab:green"
SALIENCY_COLOR = "tab:blue"


def _save_png(figure: Figure, path: str | Path, dpi: int) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def _as_windows(value: Any, width: int, what: str) -> np.ndarray:
    windows = np.asarray(value if value is not None else [], dtype=np.float64).reshape(-1, width)
    if (windows[:, 1] < windows[:, 0]).any():
        raise ValueError(
            f"{what}: every window must be [start, end, ...] with end >= start, got {windows.tolist()}"
        )
    return windows


def _draw_timeline(axes, item: Mapping[str, Any], clip_length: float, top_k: int) -> None:
    """Draw one query on ``axes``: x in seconds, saliency on the left y axis, windows as shaded spans."""
    windows = _as_windows(item.get("pred_relevant_windows"), 3, "pred_relevant_windows")[:top_k]
    truth = _as_windows(item.get("relevant_windows"), 2, "relevant_windows")
    saliency = np.asarray(item.get("pred_saliency_scores") or [], dtype=np.float64)
    ends = [len(saliency) * clip_length, windows[:, 1].max(initial=0.0), truth[:, 1].max(initial=0.0)]
    duration = float(item.get("duration") or max(ends) or clip_length)

    if len(saliency):
        # One step per clip: clip i covers [i c, (i + 1) c).
        edges = np.arange(len(saliency) + 1) * clip_length
        axes.stairs(
            saliency, edges, baseline=None, color=SALIENCY_COLOR, linewidth=1.5, label="saliency", zorder=3
        )
    axes.set_ylabel("saliency")
    for rank, (start, end, score) in enumerate(windows):
        # Better-ranked windows are drawn more opaque.
        axes.axvspan(start, end, color=PREDICTION_COLOR, alpha=0.45 * (1 - rank / (len(windows) + 1)), lw=0)
        axes.annotate(
            f"#{rank + 1} {score:.2f}",
            xy=((start + end) / 2, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, -10 * (rank + 1)),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    # Ground truth as a bar just below the plotting area.
    for start, end in truth:
        axes.axvspan(start, end, ymin=0.0, ymax=0.05, color=TRUTH_COLOR, lw=0)
    axes.set_xlim(0.0, duration)
    query = item.get("query")
    axes.set_title(f"{query!s}" if query else str(item.get("qid", "")), fontsize=10, loc="left")
    legend = [Patch(color=PREDICTION_COLOR, alpha=0.45, label=f"top-{len(windows)} predicted")]
    if len(truth):
        legend.append(Patch(color=TRUTH_COLOR, label="ground truth"))
    handles, _ = axes.get_legend_handles_labels()
    axes.legend(handles=handles + legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def timeline_figure(
    predictions: Mapping[str, Any] | Sequence[Mapping[str, Any]], clip_length: float = 2.0, top_k: int = 3
) -> Figure:
    """The figure of :func:`plot_timeline`: one row of axes per query, x in seconds."""
    items = [predictions] if isinstance(predictions, Mapping) else list(predictions)
    if not items:
        raise ValueError("plot_timeline needs at least one prediction")
    if clip_length <= 0 or top_k < 1:
        raise ValueError(f"clip_length must be > 0 and top_k >= 1, got {clip_length} and {top_k}")
    figure = Figure(figsize=(10, 2.6 * len(items)), layout="constrained")
    axes_list = figure.subplots(len(items), 1, squeeze=False)[:, 0]
    for axes, item in zip(axes_list, items):
        _draw_timeline(axes, item, clip_length, top_k)
    axes_list[-1].set_xlabel("time (s)")
    return figure


def plot_timeline(
    predictions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    path: str | Path,
    clip_length: float = 2.0,
    top_k: int = 3,
    dpi: int = 120,
) -> Path:
    """Timeline PNG: per query, the saliency curve, the ``top_k`` predicted windows and the ground truth.

    Args:
        predictions: one mapping or a list (one row each), with the keys of a prediction line:
            ``pred_relevant_windows`` ([[start_s, end_s, score], ...], best first),
            optional ``pred_saliency_scores`` (one per clip), ``query``/``qid`` (the title),
            ``relevant_windows`` ([[start_s, end_s], ...] ground truth), ``duration`` (seconds).
        path: where to write the PNG (atomically).
        clip_length: seconds per saliency value.
        top_k: predicted windows shaded, labelled ``#rank score``.

    Returns:
        ``path``.
    """
    return _save_png(timeline_figure(predictions, clip_length, top_k), path, dpi)


def learning_curves_figure(
    history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]],
    metric: str,
    *,
    reference_lines: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Figure:
    """The figure of :func:`plot_learning_curves`: loss and lr (left), ``metric`` (right) per optimizer step."""
    runs = dict(history) if isinstance(history, Mapping) else {"": history}
    trains = {name: [r for r in records if "loss" in r] for name, records in runs.items()}
    evals = {name: [r for r in records if metric in r.get("eval", {})] for name, records in runs.items()}
    if not any(trains.values()) and not any(evals.values()):
        raise ValueError("the history holds no training loss and no evaluation to plot")
    figure = Figure(figsize=(11, 3.5), layout="constrained")
    loss_axes, metric_axes = figure.subplots(1, 2)
    lr_axes = loss_axes.twinx() if any(trains.values()) else None
    single = len(runs) == 1
    for index, (name, train) in enumerate(trains.items()):
        # one colour per run on both panels; a single run keeps red loss and grey lr
        color, suffix = f"C{index}", f" ({name})" if name else ""
        if train:
            steps = [r["step"] for r in train]
            loss_color, lr_color = ("tab:red", "tab:gray") if single else (color, color)
            loss_axes.plot(
                steps, [r["loss"] for r in train], color=loss_color, label=f"training loss{suffix}"
            )
            lr_axes.plot(
                steps,
                [r["lr"] for r in train],
                color=lr_color,
                linestyle="--",
                label=f"learning rate{suffix}",
            )
        if evals[name]:
            metric_axes.plot(
                [r["step"] for r in evals[name]],
                [r["eval"][metric] for r in evals[name]],
                marker="o",
                color=color,
                label=name or metric,
            )
    if lr_axes is not None:
        loss_axes.set_yscale("log")
        lr_axes.set_ylabel("learning rate")
        loss_axes.legend(handles=loss_axes.get_lines() + lr_axes.get_lines(), loc="upper right", fontsize=8)
    loss_axes.set_xlabel("optimizer step")
    loss_axes.set_ylabel("loss")
    for index, (label, value) in enumerate((reference_lines or {}).items()):
        metric_axes.axhline(value, color=f"C{len(runs) + index}", linestyle="--", linewidth=1, label=label)
    if not single or reference_lines:
        metric_axes.legend(fontsize=8)
    metric_axes.set_xlabel("optimizer step")
    metric_axes.set_ylabel(metric)
    metric_axes.set_title(f"evaluation: {metric}", fontsize=10)
    metric_axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure


def plot_learning_curves(
    history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    metric: str,
    dpi: int = 120,
    *,
    reference_lines: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Path:
    """Learning-curve PNG: training loss and learning rate against the optimizer step, and ``metric`` per evaluation.

    Args:
        history: records as kept in ``TrainerState.history``: training records carry ``step``,
            ``loss`` and ``lr``; evaluation records carry ``step`` and ``eval`` (the metrics' brief).
            Several runs: a mapping of run name -> records, each run in its own colour.
        path: where to write the PNG (atomically).
        metric: the key of ``eval`` to plot (the recipe's main metric).
        reference_lines: label -> value of ``metric`` drawn as horizontal lines (e.g. pass bars).
        title: the figure's title.
    """
    figure = learning_curves_figure(history, metric, reference_lines=reference_lines, title=title)
    return _save_png(figure, path, dpi)
