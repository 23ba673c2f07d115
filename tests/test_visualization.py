"""Timeline and learning-curve plots: what is drawn where, and the PNG files."""

import logging

import numpy as np
import pytest
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from PIL import Image

from sgdetr_hf import visualization
from sgdetr_hf.visualization import (
    learning_curves_figure,
    plot_learning_curves,
    plot_timeline,
    timeline_figure,
    window_lanes,
)

PREDICTION = {
    "qid": "7",
    "query": "a dog runs on the beach",
    "duration": 20.0,
    "pred_relevant_windows": [[4.0, 10.0, 0.9], [12.0, 14.0, 0.5], [0.0, 2.0, 0.1], [16.0, 18.0, 0.05]],
    "pred_saliency_scores": [0.0, 0.1, 0.8, 0.9, 0.7, 0.2, 0.4, 0.0, 0.0, 0.0],
    "relevant_windows": [[6.0, 10.0]],
}


def _spans(axes):
    """(x0, x1, alpha) of the axvspan rectangles, in drawing order."""
    return [
        (round(p.get_x(), 6), round(p.get_x() + p.get_width(), 6), p.get_alpha())
        for p in axes.patches
        if isinstance(p, Rectangle)
    ]


def test_timeline_draws_top_k_windows_truth_and_saliency_steps():
    figure = timeline_figure(PREDICTION, clip_length=2.0, top_k=3)
    (axes,) = figure.axes
    spans = _spans(axes)
    # three predicted windows, most opaque first, then the ground truth bar
    assert [s[:2] for s in spans] == [(4.0, 10.0), (12.0, 14.0), (0.0, 2.0), (6.0, 10.0)]
    assert spans[0][2] > spans[1][2] > spans[2][2]
    assert [t.get_text() for t in axes.texts] == ["#1 0.90", "#2 0.50", "#3 0.10"]
    (stairs,) = [p for p in axes.patches if not isinstance(p, Rectangle)]
    values, edges, _ = stairs.get_data()
    assert list(values) == PREDICTION["pred_saliency_scores"]
    assert list(edges) == [2.0 * i for i in range(11)]  # clip i covers [2i, 2i + 2) seconds
    assert axes.get_xlim() == (0.0, 20.0)
    assert axes.get_title(loc="left") == "a dog runs on the beach"


@pytest.mark.parametrize("query", ["costs $5 and $10", r"a $\frac$ b"])
def test_dollar_signs_in_queries_and_run_names_are_drawn_as_written(tmp_path, query):
    # matplotlib read them as math: the first was drawn as "costs 5and10" in italics, the second failed to draw
    figure = timeline_figure({**PREDICTION, "query": query}, clip_length=2.0)
    assert figure.axes[0].get_title(loc="left") == query
    plot_timeline({**PREDICTION, "query": query}, tmp_path / "timeline.png")
    history = [{"step": s, "lr": 1e-4, "loss": 100.0 / s, "eval": {"MR-full-mAP": 1.0}} for s in (1, 30)]
    figure = learning_curves_figure({query: history, "other": history}, "MR-full-mAP", title=query)
    figure.canvas.draw()
    written = [text for text in figure.findobj(Text) if query in text.get_text()]
    assert len(written) == 4 and not any(text.get_parse_math() for text in written)  # title, 3 legend rows
    # the log loss axis keeps its mathtext tick labels (10^2 and 10^1, not "$\mathdefault{10^{2}}$" as text)
    ticks = [t for t in figure.axes[0].get_yticklabels() if "mathdefault" in t.get_text()]
    assert ticks and all(t.get_parse_math() for t in ticks)
    plot_learning_curves({query: history}, tmp_path / "curves.png", "MR-full-mAP", title=query)


def test_timeline_png_for_several_queries(tmp_path):
    second = {"qid": "8", "pred_relevant_windows": [[1.0, 3.0, 0.7]]}
    path = plot_timeline([PREDICTION, second], tmp_path / "plots" / "t.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.height > image.width / 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.png"]  # no temporary file left


def test_timeline_rejects_bad_windows(tmp_path):
    with pytest.raises(ValueError, match="end >= start"):
        plot_timeline({"pred_relevant_windows": [[5.0, 1.0, 0.3]]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one prediction"):
        plot_timeline([], tmp_path / "x.png")


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"duration": -5.0}, r"prediction 0 \(qid '7'\): duration must be > 0 and finite \(seconds\), got -5.0"),
        ({"duration": INF}, r"prediction 0 \(qid '7'\): duration must be > 0 and finite \(seconds\), got inf"),
        ({"duration": 0.0}, r"prediction 0 \(qid '7'\): duration must be > 0"),
        ({"duration": "20"}, r"prediction 0 \(qid '7'\): duration must be > 0 and finite \(seconds\), got '20'"),
        ({"pred_saliency_scores": [0.1, NAN, 0.3]}, r"qid '7'\): pred_saliency_scores must be finite, got nan at clip 1"),
        ({"pred_saliency_scores": [0.1, 0.2, INF]}, r"qid '7'\): pred_saliency_scores must be finite, got inf at clip 2"),
        ({"pred_saliency_scores": [[0.1, 0.2]]}, r"qid '7'\): pred_saliency_scores must be a list of numbers"),
        ({"pred_relevant_windows": [[NAN, 4.0, 0.9]]}, r"qid '7'\): pred_relevant_windows must hold finite numbers"),
        ({"pred_relevant_windows": [[0.0, INF, 0.9]]}, r"qid '7'\): pred_relevant_windows must hold finite numbers"),
        ({"pred_relevant_windows": [[0.0, 4.0, NAN]]}, r"qid '7'\): pred_relevant_windows must hold finite numbers"),
        ({"pred_relevant_windows": [[0.0, 4.0]]}, r"pred_relevant_windows must be a list of \[start, end, score\] numbers"),
        ({"pred_relevant_windows": [[0.0, 4.0, 0.9], [1.0]]}, r"pred_relevant_windows must be a list of \[start, end, score\]"),
        ({"relevant_windows": [[2.0, NAN]]}, r"qid '7'\): relevant_windows must hold finite numbers"),
    ],
)  # fmt: skip
def test_unplottable_fields_are_refused_naming_the_prediction_and_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        timeline_figure({**PREDICTION, **change})


def test_an_unplottable_prediction_without_qid_is_named_by_its_index():
    second = {"query": "q", "pred_relevant_windows": [[1.0, 3.0, 0.5]], "duration": -1.0}
    with pytest.raises(ValueError, match=r"^prediction 1: duration must be > 0"):
        timeline_figure([PREDICTION, second])


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"clip_length": NAN}, r"clip_length must be > 0 and finite \(seconds per saliency value\), got nan"),
        ({"clip_length": INF}, r"clip_length must be > 0 and finite .*, got inf"),
        ({"clip_length": 0.0}, r"clip_length must be > 0 and finite .*, got 0.0"),
        ({"top_k": 2.5}, r"top_k must be an int >= 1 \(predicted windows drawn per query\), got 2.5"),
        ({"top_k": 0}, r"top_k must be an int >= 1 .*, got 0"),
        ({"top_k": True}, r"top_k must be an int >= 1 .*, got True"),
        ({"duration": INF}, r"duration must be > 0 and finite \(seconds\) or None, got inf"),
        ({"duration": NAN}, r"duration must be > 0 and finite \(seconds\) or None, got nan"),
    ],
)  # fmt: skip
def test_unplottable_arguments_are_refused(arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        plot_timeline(PREDICTION, tmp_path / "x.png", **arguments)
    assert not (tmp_path / "x.png").exists()


def test_the_legend_names_only_what_is_drawn_and_numpy_inputs_are_plotted():
    (axes,) = timeline_figure({"qid": "9", "pred_relevant_windows": [], "duration": 10.0}).axes
    assert [text.get_text() for text in axes.get_legend().get_texts()] == []  # was "top-0 predicted"
    numpy_item = {**PREDICTION, "pred_saliency_scores": np.asarray(PREDICTION["pred_saliency_scores"])}
    (axes,) = timeline_figure(numpy_item, top_k=np.int64(2)).axes
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == ["saliency", "top-2 predicted", "ground truth"]


def test_learning_curves(tmp_path):
    history = [
        {"step": 5, "epoch": 0.5, "lr": 1e-4, "loss": 9.0},
        {"step": 10, "epoch": 1.0, "lr": 2e-4, "loss": 6.0},
        {"step": 10, "epoch": 1, "eval": {"MR-full-mAP": 3.5}},
        {"step": 20, "epoch": 2, "eval": {"MR-full-mAP": 7.25}},
    ]
    loss_axes, metric_axes, lr_axes = learning_curves_figure(history, "MR-full-mAP").axes
    assert list(loss_axes.get_lines()[0].get_ydata()) == [9.0, 6.0]
    assert list(lr_axes.get_lines()[0].get_ydata()) == [1e-4, 2e-4]
    assert list(metric_axes.get_lines()[0].get_xdata()) == [10, 20]
    assert list(metric_axes.get_lines()[0].get_ydata()) == [3.5, 7.25]
    with Image.open(plot_learning_curves(history, tmp_path / "curves.png", "MR-full-mAP")) as image:
        assert image.format == "PNG"
    with pytest.raises(ValueError, match="no training loss and no evaluation"):
        plot_learning_curves([], tmp_path / "none.png", "MR-full-mAP")


def test_learning_curves_of_several_runs_with_reference_lines(tmp_path):
    runs = {
        "real": [
            {"step": 10, "lr": 1e-3, "loss": 8.0},
            {"step": 10, "eval": {"MR-full-mAP": 20.0}},
            {"step": 20, "lr": 5e-4, "loss": 4.0},
            {"step": 20, "eval": {"MR-full-mAP": 40.0}},
        ],
        "shuffled": [{"step": 20, "lr": 5e-4, "loss": 9.0}, {"step": 20, "eval": {"MR-full-mAP": 2.0}}],
        "chance": [{"step": 20, "eval": {"MR-full-mAP": 5.0}}],  # an evaluation only
    }
    figure = learning_curves_figure(
        runs, "MR-full-mAP", reference_lines={"pass >=": 30.0, "chance: pass <": 10.0}, title="toy"
    )
    loss_axes, metric_axes, lr_axes = figure.axes
    assert [line.get_label() for line in loss_axes.get_lines()] == [
        "training loss (real)",
        "training loss (shuffled)",
    ]
    assert [list(line.get_ydata()) for line in lr_axes.get_lines()] == [[1e-3, 5e-4], [5e-4]]
    curves, bars = metric_axes.get_lines()[:3], metric_axes.get_lines()[3:]
    assert [(line.get_label(), list(line.get_ydata())) for line in curves] == [
        ("real", [20.0, 40.0]),
        ("shuffled", [2.0]),
        ("chance", [5.0]),
    ]
    assert [(line.get_label(), line.get_ydata()[0]) for line in bars] == [
        ("pass >=", 30.0),
        ("chance: pass <", 10.0),
    ]
    # one colour per run on both panels
    assert loss_axes.get_lines()[1].get_color() == curves[1].get_color() != curves[0].get_color()
    assert figure.get_suptitle() == "toy"
    with Image.open(plot_learning_curves(runs, tmp_path / "runs.png", "MR-full-mAP", title="toy")) as image:
        assert image.format == "PNG"


def _prediction_spans(axes):
    """The predicted windows' rectangles: x from ``start`` to ``end``, y (axes fraction) above the truth bar."""
    return [p for p in axes.patches if isinstance(p, Rectangle) and p.get_y() > 0.05]


def test_a_long_query_title_is_wrapped_and_cut_and_the_png_keeps_its_width(tmp_path):
    long_query = "a man walks his dog along the beach at sunset " * 55  # ~2,500 characters
    title = timeline_figure({**PREDICTION, "query": long_query}).axes[0].get_title(loc="left")
    lines = title.split("\n")
    assert len(lines) == 2 and all(len(line) <= 90 for line in lines) and lines[-1].endswith("\u2026")
    widths = []
    for name, query in (("short", "a dog"), ("long", long_query)):
        with Image.open(plot_timeline({**PREDICTION, "query": query}, tmp_path / f"{name}.png")) as image:
            widths.append(image.width)
    assert widths[1] <= widths[0] * 1.1  # before: 21,081 px for a 2,500-character query


def test_overlapping_windows_are_drawn_in_separate_lanes():
    windows = [[4.0, 10.0, 0.9], [5.0, 9.0, 0.8], [12.0, 14.0, 0.5], [6.0, 13.0, 0.4]]
    assert window_lanes(windows) == [0, 1, 0, 2]
    (axes,) = timeline_figure({**PREDICTION, "pred_relevant_windows": windows}, top_k=4).axes
    bars = _prediction_spans(axes)
    assert [(bar.get_x(), bar.get_x() + bar.get_width()) for bar in bars] == [tuple(w[:2]) for w in windows]
    for first in range(len(bars)):
        for second in range(first + 1, len(bars)):
            a, b = bars[first], bars[second]
            overlap_in_time = a.get_x() < b.get_x() + b.get_width() and b.get_x() < a.get_x() + a.get_width()
            overlap_in_y = a.get_y() < b.get_y() + b.get_height() and b.get_y() < a.get_y() + a.get_height()
            assert not (overlap_in_time and overlap_in_y), (first, second)
    # the saliency curve stays below the lowest lane
    (stairs,) = [p for p in axes.patches if not isinstance(p, Rectangle)]
    low, high = axes.get_ylim()
    curve_top = (max(PREDICTION["pred_saliency_scores"]) - low) / (high - low)
    assert curve_top < min(bar.get_y() for bar in bars)


def test_the_time_axis_ends_with_the_video():
    # 5.3 s of video: three 2-s clips, the last one cut by the end of the video
    short = {
        "query": "q",
        "pred_relevant_windows": [[0.0, 5.3, 0.9]],
        "pred_saliency_scores": [0.1, 0.5, 0.2],
    }
    (axes,) = timeline_figure(short, duration=5.3).axes
    assert axes.get_xlim() == (0.0, 5.3)
    (stairs,) = [p for p in axes.patches if not isinstance(p, Rectangle)]
    assert list(stairs.get_data().edges) == [0.0, 2.0, 4.0, 5.3]
    (axes,) = timeline_figure({**short, "duration": 5.3, "relevant_windows": [[4.0, 9.0]]}).axes
    assert axes.get_xlim() == (0.0, 5.3)
    assert max(p.get_x() + p.get_width() for p in axes.patches if isinstance(p, Rectangle)) == 5.3
    with pytest.raises(ValueError, match="duration must be > 0"):
        timeline_figure(short, duration=0.0)


def test_titles_no_installed_font_draws_say_so_instead_of_drawing_boxes(caplog, monkeypatch):
    monkeypatch.setattr(visualization, "_UNDRAWABLE_WARNED", [])
    arabic = "رجل يركب دراجة"  # DejaVu Sans (shipped with matplotlib) draws Arabic letters
    (axes,) = timeline_figure({**PREDICTION, "query": arabic}).axes
    assert axes.get_title(loc="left") == arabic
    cjk = "一个男人骑自行车"
    if any(ord("一") in points for points in visualization._font_characters().values()):
        pytest.skip("a CJK font is installed here: the title is drawn with it")
    with caplog.at_level(logging.WARNING, logger="sgdetr_hf.visualization"):
        for _ in range(2):
            (axes,) = timeline_figure({**PREDICTION, "query": cjk}).axes
    assert axes.get_title(loc="left") == "????????\n(? = a character no installed font can draw)"
    (record,) = [r for r in caplog.records if "no installed font" in r.getMessage()]  # once per process
    assert "fonts-noto-cjk" in record.getMessage()


def test_titles_use_an_installed_font_that_covers_them(monkeypatch):
    default = visualization.font_manager.FontProperties(
        family=visualization.rcParams["font.family"]
    ).get_name()
    fonts = {**visualization._font_characters(), "Test CJK": frozenset(map(ord, "一个男人骑自行车"))}
    monkeypatch.setattr(visualization, "_font_characters", lambda: fonts)
    title, families = visualization._drawable_title("a 一个男人骑自行车")
    assert title == "a 一个男人骑自行车" and families == [default, "Test CJK"]
