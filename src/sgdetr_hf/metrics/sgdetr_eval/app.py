"""The metric Space: paste JSON Lines predictions and annotations, get the metrics as JSON.

Our own small Gradio UI (``evaluate.utils.launch_gradio_widget`` is broken with gradio >= 4). It calls
the plain function of ``mr_hd_metrics.py`` beside this file; run it with ``python app.py``.
"""

from typing import Any

from mr_hd_metrics import DATASETS, compute_metrics, parse_jsonl

# One 20-second video (10 clips of 2 s) whose moment is seconds [4, 10), i.e. clips 2, 3 and 4.
_EXAMPLE_PREDICTIONS = (
    '{"qid": 1, "pred_relevant_windows": [[4, 10, 0.9], [12, 16, 0.4]], '
    '"pred_saliency_scores": [0.1, 0.2, 0.9, 0.8, 0.6, 0.3, 0.1, 0.0, 0.2, 0.1]}'
)
_EXAMPLE_REFERENCES = (
    '{"qid": 1, "duration": 20, "relevant_windows": [[4, 10]], '
    '"relevant_clip_ids": [2, 3, 4], "saliency_scores": [[4, 3, 4], [3, 2, 2], [1, 2, 0]]}'
)


def evaluate_text(dataset: str, predictions: str, references: str) -> dict[str, Any]:
    """Metrics of ``dataset`` for JSON Lines texts (one object per line); ValueError on bad input."""
    return compute_metrics(
        dataset,
        parse_jsonl(predictions.splitlines(), "predictions"),
        parse_jsonl(references.splitlines(), "references"),
    )


def build_demo():
    """The Gradio interface (gradio is imported here: the Space has it, the metric itself does not need it)."""
    import gradio as gr

    def run(dataset: str, predictions: str, references: str) -> dict[str, Any]:
        try:
            return evaluate_text(dataset, predictions, references)
        except ValueError as error:
            raise gr.Error(str(error)) from None

    return gr.Interface(
        fn=run,
        inputs=[
            gr.Dropdown(list(DATASETS), value="qvhighlights", label="dataset"),
            gr.Textbox(lines=8, label="predictions (JSON Lines)", value=_EXAMPLE_PREDICTIONS),
            gr.Textbox(lines=8, label="annotations (JSON Lines)", value=_EXAMPLE_REFERENCES),
        ],
        outputs=gr.JSON(label="metrics (percent)"),
        title="SG-DETR moment retrieval and highlight detection metrics",
        description=(
            "QVHighlights (official Moment-DETR numbers), Charades-STA, TACoS, YouTube Highlights and TVSum. "
            "One JSON object per line; rows are matched by qid."
        ),
        flagging_mode="never",
    )


if __name__ == "__main__":
    build_demo().launch()
