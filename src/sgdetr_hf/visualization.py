"""Plots: the timeline of one or more queries (saliency, predicted and true moments) and learning curves.

Both functions take plain data (the prediction JSON Lines format of ``sgdetr_hf.metrics`` and the
training history of :class:`~sgdetr_hf.training.checkpointing.TrainerState`), draw with
matplotlib's object API (no pyplot global state, no display needed) and write PNGs atomically.
"""

from __future__ import annotations

import functools
import io
import logging
import numbers
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import font_manager, rcParams
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font
from matplotlib.patches import Patch
from matplotlib.text import Text

from .files import atomic_write_bytes
from .postprocessing_sgdetr import is_finite_positive

PREDICTION_COLOR = "tab:orange"
TRUTH_COLOR = "tab:green"
SALIENCY_COLOR = "tab:blue"
#: a query title is wrapped to this many characters per line and cut after this many lines
TITLE_LINE_CHARS = 90
TITLE_MAX_LINES = 2
#: height of one lane of predicted windows, and the bottom of the saliency curve (axes fractions)
LANE_HEIGHT = 0.1
SALIENCY_BOTTOM = 0.08

logger = logging.getLogger(__name__)
_UNDRAWABLE_WARNED: list[bool] = []  # one warning per process about characters no font draws


def _save_png(figure: Figure, path: str | Path, dpi: int) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def _as_windows(value: Any, width: int, what: str) -> np.ndarray:
    form = "[start, end, score]" if width == 3 else "[start, end]"
    try:
        windows = np.asarray(value if value is not None else [], dtype=np.float64)
        if windows.ndim != 2 or windows.shape[1] != width:
            windows = windows.reshape(-1, width) if windows.size == 0 else None
    except (TypeError, ValueError):  # ragged, or not numbers
        windows = None
    if windows is None:
        raise ValueError(f"{what} must be a list of {form} numbers, got {value!r}")
    if not np.isfinite(windows).all():
        raise ValueError(f"{what} must hold finite numbers (no NaN or inf), got {windows.tolist()}")
    if (windows[:, 1] < windows[:, 0]).any():
        raise ValueError(
            f"{what}: every window must be [start, end, ...] with end >= start, got {windows.tolist()}"
        )
    return windows


def _item_name(index: int, item: Mapping[str, Any]) -> str:
    qid = item.get("qid")
    return f"prediction {index}" + (f" (qid {qid!r})" if qid is not None else "")


def _timeline_data(
    index: int, item: Any, clip_length: float, top_k: int, duration: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(windows, truth, saliency, duration)`` of one prediction, checked before anything is drawn: a
    ``ValueError`` names the prediction (and its qid) and the field, instead of an inverted, empty or
    unlabelled plot or matplotlib's error about axis limits."""
    if not isinstance(item, Mapping):
        raise ValueError(
            f"prediction {index} must be a mapping (a prediction line), got {type(item).__name__}"
        )
    name = _item_name(index, item)
    windows = _as_windows(item.get("pred_relevant_windows"), 3, f"{name}: pred_relevant_windows")[:top_k]
    truth = _as_windows(item.get("relevant_windows"), 2, f"{name}: relevant_windows")
    scores = item.get("pred_saliency_scores")
    try:
        saliency = np.asarray(scores if scores is not None else [], dtype=np.float64)
    except (TypeError, ValueError):
        saliency = None
    if saliency is None or saliency.ndim != 1:
        raise ValueError(
            f"{name}: pred_saliency_scores must be a list of numbers (one per clip), got {scores!r}"
        )
    if not np.isfinite(saliency).all():
        bad = np.flatnonzero(~np.isfinite(saliency))
        raise ValueError(
            f"{name}: pred_saliency_scores must be finite, got {saliency[bad[0]]} at clip {bad[0]} "
            f"({bad.size} non-finite value(s))"
        )
    if duration is None and item.get("duration") is not None:
        duration = item["duration"]
        if not is_finite_positive(duration):
            raise ValueError(f"{name}: duration must be > 0 and finite (seconds), got {duration!r}")
    if duration is None:  # the clip grid's end: the video ends in its last clip
        ends = [len(saliency) * clip_length, windows[:, 1].max(initial=0.0), truth[:, 1].max(initial=0.0)]
        duration = max(ends) or clip_length
    return windows, truth, saliency, float(duration)


def window_lanes(windows: np.ndarray) -> list[int]:
    """The lane of each ``[start, end, ...]`` window, in rank order: the first lane where it overlaps no
    better-ranked window, so that overlapping windows are drawn one above the other."""
    lanes: list[list[tuple[float, float]]] = []
    assigned = []
    for start, end, *_ in windows:
        lane = next(
            (index for index, taken in enumerate(lanes) if all(end <= s or e <= start for s, e in taken)),
            len(lanes),
        )
        if lane == len(lanes):
            lanes.append([])
        lanes[lane].append((start, end))
        assigned.append(lane)
    return assigned


def _title_lines(text: str) -> str:
    """``text`` wrapped to ``TITLE_LINE_CHARS`` per line, at most ``TITLE_MAX_LINES`` lines (then "…"): a
    2,500-character query would otherwise make the PNG (saved with a tight bounding box) 20,000 px wide."""
    lines = textwrap.wrap(" ".join(text.split()), TITLE_LINE_CHARS) or [""]
    if len(lines) > TITLE_MAX_LINES:
        lines = lines[:TITLE_MAX_LINES]
        lines[-1] = lines[-1][: TITLE_LINE_CHARS - 1].rstrip() + "\u2026"
    return "\n".join(lines)


@functools.cache
def _font_characters() -> dict[str, frozenset[int]]:
    """Family name -> the code points its font draws, for every font matplotlib finds (read once). Not
    "Last Resort" (matplotlib ships it to draw a box for every character no other font has), nor the TeX
    math fonts (cm*, STIXNonUnicode, STIXSize*), whose character maps are not Unicode text."""
    characters: dict[str, set[int]] = {}
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith(("Last Resort", "cm", "STIXNonUnicode", "STIXSize")):
            continue
        try:
            charmap = FT2Font(entry.fname).get_charmap()
        except (OSError, RuntimeError):  # a font file matplotlib lists but FreeType cannot open
            continue
        characters.setdefault(entry.name, set()).update(charmap)
    return {name: frozenset(points) for name, points in characters.items()}


def _drawable_title(text: str) -> tuple[str, list[str]]:
    """``(title, font families)``: the families (the default first, then fallbacks such as a CJK font when
    one is installed) that draw the characters of ``text``. The characters that no installed font draws
    become "?" and the title says so, and so does a warning (once per process) instead of silent boxes.
    matplotlib ships only DejaVu, which draws Latin, Greek, Cyrillic, Arabic and Hebrew letters but no CJK;
    matplotlib has no right-to-left layout or Arabic shaping, so Arabic letters come unjoined, left to right."""
    default = font_manager.FontProperties(family=rcParams["font.family"]).get_name()
    fonts = _font_characters()
    missing = {ord(c) for c in text if not c.isspace()} - fonts.get(default, frozenset())
    families = [default]
    for name, points in sorted(fonts.items(), key=lambda item: -len(missing & item[1])):
        if not missing:
            break
        if missing & points:
            families.append(name)
            missing -= points
    if not missing:
        return text, families
    if not _UNDRAWABLE_WARNED:
        _UNDRAWABLE_WARNED.append(True)
        logger.warning(
            "no installed font draws %d character(s) of a plot title (e.g. %r); they are drawn as '?'. "
            "Install a font that covers them (e.g. Noto Sans CJK: apt-get install fonts-noto-cjk) and "
            "matplotlib uses it (after removing its font cache, ~/.cache/matplotlib)",
            len(missing),
            "".join(chr(point) for point in sorted(missing)[:5]),
        )
    drawable = "".join("?" if ord(c) in missing else c for c in text)
    return f"{drawable}\n(? = a character no installed font can draw)", families


def _draw_timeline(
    axes,
    item: Mapping[str, Any],
    data: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    clip_length: float,
) -> None:
    """Draw one query on ``axes`` (``data``: from :func:`_timeline_data`): x in seconds from 0 to the video's
    end, saliency on the y axis, the predicted windows as bars in lanes at the top (overlapping windows in
    separate lanes), the ground truth as a bar at the bottom."""
    windows, truth, saliency, duration = data
    lanes = window_lanes(windows)
    num_lanes = max(lanes, default=-1) + 1
    # y layout in axes fractions: the truth bar at the bottom, the saliency curve, the window lanes on top
    data_top = 1.0 - LANE_HEIGHT * num_lanes - 0.03
    if len(saliency):
        low, high = float(saliency.min()), float(saliency.max())
        high = high if high > low else low + 1.0
        span = (high - low) / (data_top - SALIENCY_BOTTOM)
        axes.set_ylim(low - SALIENCY_BOTTOM * span, low - SALIENCY_BOTTOM * span + span)
        # One step per clip: clip i covers [i c, (i + 1) c); the last clip ends with the video.
        edges = np.minimum(np.arange(len(saliency) + 1) * clip_length, duration)
        axes.stairs(
            saliency, edges, baseline=None, color=SALIENCY_COLOR, linewidth=1.5, label="saliency", zorder=3
        )
    axes.set_ylabel("saliency")
    for rank, ((start, end, score), lane) in enumerate(zip(windows, lanes)):
        start, end = min(start, duration), min(end, duration)
        top = 1.0 - LANE_HEIGHT * lane
        # Better-ranked windows are drawn more opaque.
        alpha = 0.9 * (1 - rank / (len(windows) + 1))
        axes.axvspan(
            start, end, ymin=top - 0.9 * LANE_HEIGHT, ymax=top, color=PREDICTION_COLOR, alpha=alpha, lw=0
        )
        axes.annotate(
            f"#{rank + 1} {score:.2f}",
            xy=((start + end) / 2, top - 0.45 * LANE_HEIGHT),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="center",
            fontsize=7,
        )
    # Ground truth as a bar at the bottom of the plotting area.
    for start, end in truth:
        axes.axvspan(min(start, duration), min(end, duration), ymin=0.0, ymax=0.05, color=TRUTH_COLOR, lw=0)
    axes.set_xlim(0.0, duration)
    query = item.get("query")
    title, families = _drawable_title(_title_lines(str(query)) if query else str(item.get("qid", "")))
    _as_written(axes.set_title(title, fontsize=10, loc="left", fontfamily=families))
    legend = (
        [Patch(color=PREDICTION_COLOR, alpha=0.9, label=f"top-{len(windows)} predicted")]
        if len(windows)
        else []
    )
    if len(truth):
        legend.append(Patch(color=TRUTH_COLOR, label="ground truth"))
    handles, _ = axes.get_legend_handles_labels()
    axes.legend(handles=handles + legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def _as_written(*texts: Text) -> None:
    """Draw these texts (queries, run names) as written: matplotlib reads ``$...$`` as math, so a query such as
    "costs $5 and $10" came out as "costs 5and10" in italics, and one with ``$\\frac$`` failed to draw at all.
    The tick labels keep their math (a log axis writes 10^2 as mathtext)."""
    for text in texts:
        text.set_parse_math(False)


def timeline_figure(
    predictions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    clip_length: float = 2.0,
    top_k: int = 3,
    duration: float | None = None,
) -> Figure:
    """The figure of :func:`plot_timeline`: one row of axes per query, x in seconds, 10 inches wide.

    Raises:
        ValueError: no prediction, ``clip_length`` or ``duration`` not a finite number > 0, ``top_k`` not
            an int >= 1, or a prediction (named with its index and qid) whose field cannot be plotted:
            windows not ``[start, end, ...]`` finite numbers with end >= start, non-finite saliency, a
            duration that is not a finite number > 0.
    """
    items = [predictions] if isinstance(predictions, Mapping) else list(predictions)
    if not items:
        raise ValueError("plot_timeline needs at least one prediction")
    if not is_finite_positive(clip_length):
        raise ValueError(
            f"clip_length must be > 0 and finite (seconds per saliency value), got {clip_length!r}"
        )
    if not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1 (predicted windows drawn per query), got {top_k!r}")
    if duration is not None and not is_finite_positive(duration):
        raise ValueError(f"duration must be > 0 and finite (seconds) or None, got {duration!r}")
    data = [_timeline_data(index, item, clip_length, top_k, duration) for index, item in enumerate(items)]
    figure = Figure(figsize=(10, 2.6 * len(items)), layout="constrained")
    axes_list = figure.subplots(len(items), 1, squeeze=False)[:, 0]
    for axes, item, item_data in zip(axes_list, items, data):
        _draw_timeline(axes, item, item_data, clip_length)
    axes_list[-1].set_xlabel("time (s)")
    return figure


def plot_timeline(
    predictions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    path: str | Path,
    clip_length: float = 2.0,
    top_k: int = 3,
    dpi: int = 120,
    duration: float | None = None,
) -> Path:
    """Timeline PNG: per query, the saliency curve, the ``top_k`` predicted windows and the ground truth.

    Args:
        predictions: one mapping or a list (one row each), with the keys of a prediction line:
            ``pred_relevant_windows`` ([[start_s, end_s, score], ...], best first),
            optional ``pred_saliency_scores`` (one per clip), ``query``/``qid`` (the title),
            ``relevant_windows`` ([[start_s, end_s], ...] ground truth), ``duration`` (seconds).
        path: where to write the PNG (atomically).
        clip_length: seconds per saliency value.
        top_k: predicted windows drawn, labelled ``#rank score``; overlapping ones in separate lanes.
        duration: the video's length in seconds, the end of the x axis (default: each prediction's
            ``duration``, else the end of its last clip).

    Raises:
        ValueError: inputs that cannot be plotted, see :func:`timeline_figure`.

    Returns:
        ``path``.
    """
    return _save_png(timeline_figure(predictions, clip_length, top_k, duration), path, dpi)


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
        legend = loss_axes.legend(
            handles=loss_axes.get_lines() + lr_axes.get_lines(), loc="upper right", fontsize=8
        )
        _as_written(*legend.get_texts())
    loss_axes.set_xlabel("optimizer step")
    loss_axes.set_ylabel("loss")
    for index, (label, value) in enumerate((reference_lines or {}).items()):
        metric_axes.axhline(value, color=f"C{len(runs) + index}", linestyle="--", linewidth=1, label=label)
    if not single or reference_lines:
        _as_written(*metric_axes.legend(fontsize=8).get_texts())
    metric_axes.set_xlabel("optimizer step")
    metric_axes.set_ylabel(metric)
    metric_axes.set_title(f"evaluation: {metric}", fontsize=10)
    metric_axes.grid(alpha=0.3)
    if title:
        _as_written(figure.suptitle(title))
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
