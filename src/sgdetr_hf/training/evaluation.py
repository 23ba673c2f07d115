"""Run a model over a split on every process, gather the predictions once per sample, compute the metrics."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .._deprecation import moved_names
from ..metrics import compute_metrics
from ..postprocessing_sgdetr import post_process_moment_retrieval

logger = logging.getLogger(__name__)

# Annotation columns the metrics read (sgdetr_hf.metrics); the features stay out of the references.
REFERENCE_COLUMNS = (
    "qid",
    "duration",
    "relevant_windows",
    "relevant_clip_ids",
    "saliency_scores",
    "label",
    "domain",
)


@torch.no_grad()
def predict(
    model,
    dataloader,
    accelerator,
    top_k: int = 10,
    round_to: float | None = None,
    description: str = "evaluating",
) -> list[dict[str, Any]]:
    """Prediction rows (the QVHighlights JSON Lines format) for every sample of ``dataloader``, on every process.

    ``dataloader`` is prepared by ``accelerator`` and yields the collator's batches (model inputs,
    ``labels`` and ``meta``). Each process predicts its share; ``gather_for_metrics`` returns all
    rows in dataset order with the padding duplicates of the last batch removed, so every sample
    appears exactly once. ``round_to``: round window endpoints to this grid in seconds (QVHighlights: 2).

    Returns:
        one dict per sample: ``qid``, ``vid``, ``query``, ``pred_relevant_windows`` ([[start_s, end_s,
        score], ...], best first, at most ``top_k``) and ``pred_saliency_scores`` (one per clip).
    """
    config = accelerator.unwrap_model(model).config
    was_training = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    for batch in tqdm(
        dataloader, desc=description, disable=not accelerator.is_local_main_process, leave=False
    ):
        meta = batch["meta"]
        outputs = model(
            video_features=batch["video_features"],
            video_mask=batch["video_mask"],
            text_features=batch["text_features"],
            text_mask=batch["text_mask"],
        )
        predictions = post_process_moment_retrieval(
            outputs, meta["duration"], batch["video_mask"], top_k=top_k, config=config, round_to=round_to
        )
        for prediction, qid, vid, query in zip(predictions, meta["qid"], meta["vid"], meta["query"]):
            prediction.update(qid=qid, vid=vid, query=query)
        rows.extend(accelerator.gather_for_metrics(predictions, use_gather_object=True))
    model.train(was_training)
    return rows


def references_of(dataset) -> list[dict[str, Any]]:
    """The annotation rows (without features) of a :class:`~sgdetr_hf.data.MomentRetrievalDataset`."""
    queries = dataset.queries.with_format(None)
    return queries.select_columns([c for c in REFERENCE_COLUMNS if c in queries.column_names]).to_list()


def evaluate_predictions(
    dataset_name: str, predictions: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The metrics of ``dataset_name`` (see :func:`sgdetr_hf.metrics.compute_metrics`).

    Every reference must have exactly one prediction: a missing or duplicated query means the
    evaluation loop lost or repeated samples, which the metric would otherwise average over silently.
    """
    predicted = [str(p["qid"]) for p in predictions]
    expected = {str(r["qid"]) for r in references}
    if len(predicted) != len(set(predicted)) or set(predicted) != expected:
        raise RuntimeError(
            f"evaluation produced {len(predicted)} predictions for {len(set(predicted))} distinct queries; "
            f"expected exactly one for each of the {len(expected)} references"
        )
    references = [dict(r, qid=str(r["qid"])) for r in references]
    return compute_metrics(dataset_name, predictions, references)


__getattr__ = moved_names(globals(), {"format_metrics_table": "sgdetr_hf.metrics:format_metrics_table"})
