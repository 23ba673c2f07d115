"""SG-DETR demo (Gradio): upload a video, type one query per line, get the moments and a timeline plot.

The model served is the ``SGDETR_MODEL`` environment variable (a Hub repository id or a local folder;
the Space sets it from its variables). Locally::

    SGDETR_MODEL=path/to/model python hub/space/app.py
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import gradio as gr
from transformers import pipeline

from sgdetr_hf import VideoMomentRetrievalPipeline
from sgdetr_hf.hub_ids import DEFAULT_MODEL_REPO
from sgdetr_hf.visualization import plot_timeline

TABLE_HEADERS = ["query", "rank", "start (s)", "end (s)", "score"]
MAX_QUERIES = 8
MAX_KEPT_PLOTS = 32


class PlotFolder:
    """The timeline PNGs: a temporary folder that keeps only the ``keep`` newest plots (Gradio copies a
    returned file into its own cache, so an older one is never read again) and is removed when the app exits."""

    def __init__(self, keep: int = MAX_KEPT_PLOTS) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="sgdetr-plots-"))
        self.keep = keep
        self._recent: collections.deque[Path] = collections.deque()
        self._lock = threading.Lock()  # Gradio may run requests in threads
        atexit.register(shutil.rmtree, self.path, ignore_errors=True)

    def new_path(self) -> Path:
        """A path for the next plot; the plots beyond the ``keep`` newest are deleted."""
        path = self.path / f"{uuid.uuid4().hex}.png"
        with self._lock:
            self._recent.append(path)
            while len(self._recent) > self.keep:
                self._recent.popleft().unlink(missing_ok=True)
        return path


def parse_queries(text: str | None) -> list[str]:
    """One query per non-empty line; ``ValueError`` (shown to the user) when there is none or too many."""
    queries = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not queries:
        raise ValueError("Type at least one query (one per line), e.g. 'a man rides a bike'.")
    if len(queries) > MAX_QUERIES:
        raise ValueError(f"At most {MAX_QUERIES} queries at once, got {len(queries)}.")
    return queries


def moments_table(results: list[dict]) -> list[list]:
    """Rows ``[query, rank, start_s, end_s, score]`` of every predicted window, best first per query."""
    return [
        [result["query"], rank, round(start, 2), round(end, 2), round(score, 4)]
        for result in results
        for rank, (start, end, score) in enumerate(result["pred_relevant_windows"], start=1)
    ]


def build_demo(model: str | None = None) -> gr.Blocks:
    """The demo's Blocks app, serving ``model`` (default: ``$SGDETR_MODEL``, else the release's repo)."""
    model = model or os.environ.get("SGDETR_MODEL", DEFAULT_MODEL_REPO)
    # The installed (bundled) pipeline class, not the repository's remote code: no trust_remote_code needed.
    retriever = pipeline("video-moment-retrieval", model=model, pipeline_class=VideoMomentRetrievalPipeline)
    plots = PlotFolder()

    def retrieve(video_path: str | None, queries_text: str, top_k: float):
        try:
            if not video_path:
                raise ValueError("Upload a video first (mp4, webm, mkv, avi or mov).")
            results = retriever(video_path, queries=parse_queries(queries_text), top_k=int(top_k))
            results = results if isinstance(results, list) else [results]
            plot = plot_timeline(
                results,
                plots.new_path(),
                clip_length=results[0]["clip_length"],
                top_k=int(top_k),
            )
        except ValueError as error:  # bad input: show the message, keep the app running
            raise gr.Error(str(error)) from None
        return moments_table(results), str(plot)

    with gr.Blocks(title="SG-DETR moment retrieval") as demo:
        gr.Markdown(
            "# SG-DETR: find the moments of a video that match a text query\n"
            "Upload a video, type one query per line, press **Find moments**. Every query gets its "
            "ranked windows and a per-clip saliency curve. "
            f"Model: `{model}` ([paper](https://arxiv.org/abs/2410.01615))."
        )
        with gr.Row():
            video = gr.Video(label="Video", sources=["upload"])
            with gr.Column():
                queries = gr.Textbox(
                    label="Queries (one per line)", lines=3, placeholder="a man rides a bike"
                )
                top_k = gr.Slider(1, 10, value=3, step=1, label="Windows per query")
                button = gr.Button("Find moments", variant="primary")
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Moments", elem_id="moments", interactive=False)
        timeline = gr.Image(label="Timeline", type="filepath", elem_id="timeline")
        button.click(retrieve, [video, queries, top_k], [table, timeline], api_name="retrieve")
    return demo


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    build_demo().launch()
