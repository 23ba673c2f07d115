"""Timeline and learning-curve plots: what is drawn where, and the PNG files."""

import pytest
from matplotlib.patches import Rectangle
from PIL import Image

from sgdetr_hf.visualization import (
    learning_curves_figure,
    plot_learning_curves,
    plot_timeline,
    timeline_figure,
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
