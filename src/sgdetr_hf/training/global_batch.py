"""One optimizer step's global batch, computed as the sum of its parts on any number of processes.

The DataLoader yields the recipe's global batch of ``G = batch_size`` samples per optimizer step, split
across the ``W`` processes (``split_batches``: process ``p`` holds samples ``p*G/W .. (p+1)*G/W - 1``), and
each process splits its share into ``gradient_accumulation_steps`` micro-batches (:func:`split_micro_batches`).
:func:`build_batch_contexts` gives every micro-batch the :class:`~sgdetr_hf.targets_sgdetr.SGDetrBatchContext`
of the global batch (its queries, real-negative flags, the counts that normalise each loss term, the
ATSS-positive query slots), with one all-gather of the queries and two small all-reduces per step. Each
forward's loss is then exactly its share of the global batch's loss, and the shares add up: the trainer sums
the gradients of a process's micro-batches and multiplies its losses by ``W`` to undo DDP's average.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from ..loss_sgdetr import LOSS_NORMALIZERS, count_loss_normalizers, max_atss_positives
from ..targets_sgdetr import SGDetrBatchContext, prepare_targets


def split_micro_batches(batch: dict[str, Any], num_micro_batches: int) -> list[dict[str, Any]]:
    """The model inputs of a collated batch as ``num_micro_batches`` consecutive equal parts, each cut to
    its own longest video and query (the collator padded to the longest of the whole batch)."""
    size = batch["video_features"].shape[0]
    if size % num_micro_batches:
        raise ValueError(
            f"a batch of {size} samples cannot be split into {num_micro_batches} equal micro-batches"
        )
    part = size // num_micro_batches
    micro_batches = []
    for first in range(0, size, part):
        rows = slice(first, first + part)
        num_clips = int(batch["video_mask"][rows].sum(1).max())
        num_tokens = int(batch["text_mask"][rows].sum(1).max())
        micro_batches.append(
            {
                "video_features": batch["video_features"][rows, :num_clips],
                "video_mask": batch["video_mask"][rows, :num_clips],
                "text_features": batch["text_features"][rows, :num_tokens],
                "text_mask": batch["text_mask"][rows, :num_tokens],
                "labels": batch["labels"][rows],
            }
        )
    return micro_batches


def _global_negative_pairs(video_ids: list[str | None]) -> torch.Tensor:
    """(G,) bool: video g with the text of sample (g + 1) % G is a real negative (other source video)."""
    if any(video_id is None for video_id in video_ids):
        raise ValueError("every training label needs its 'video_id' (the collator sets it) to pair negatives")
    if len(video_ids) < 2:
        return torch.zeros(len(video_ids), dtype=torch.bool)
    return torch.tensor([a != b for a, b in zip(video_ids, video_ids[1:] + video_ids[:1])])


def build_batch_contexts(
    accelerator: Accelerator, config, micro_batches: list[dict[str, Any]]
) -> list[SGDetrBatchContext]:
    """The global batch's context for each of this process's micro-batches (collective: every process calls it
    once per optimizer step, with its share of the step's global batch split into ``micro_batches``).

    Args:
        accelerator: the run's accelerator (its processes hold consecutive shares of the global batch).
        config: the model's ``SGDetrConfig``.
        micro_batches: this process's share, in order (:func:`split_micro_batches`), tensors on its device.
    """
    device = accelerator.device
    num_tokens = max(micro["text_mask"].shape[1] for micro in micro_batches)

    def padded(micro: dict[str, Any], name: str) -> torch.Tensor:
        value = micro[name]
        pad = [0, 0] * (value.ndim - 2) + [0, num_tokens - value.shape[1]]
        return torch.nn.functional.pad(value, pad)

    text = torch.cat([padded(micro, "text_features") for micro in micro_batches]).to(device)
    text_mask = torch.cat([padded(micro, "text_mask") for micro in micro_batches]).to(device)
    share = text.shape[0]
    # the global batch's queries and source videos, in process order
    text = accelerator.gather(accelerator.pad_across_processes(text.float(), dim=1))
    text_mask = accelerator.gather(accelerator.pad_across_processes(text_mask.long(), dim=1)).bool()
    video_ids = [label.get("video_id") for micro in micro_batches for label in micro["labels"]]
    neg_pair_mask = _global_negative_pairs(gather_object(video_ids)).to(device)

    contexts, targets = [], []
    start = accelerator.process_index * share
    for micro in micro_batches:
        context = SGDetrBatchContext(text, text_mask, start, neg_pair_mask)
        video_mask = micro["video_mask"].to(device).bool()
        targets.append(
            prepare_targets(
                micro["labels"],
                micro["video_features"].to(device),
                video_mask,
                config.num_saliency_pairs,
                context,
            )
        )
        contexts.append(context)
        start += video_mask.shape[0]

    # the ATSS-positive query slots, then every normaliser, of the global batch
    most_positives = torch.tensor([max(max_atss_positives(config, t) for t in targets)], device=device)
    slots = min(int(accelerator.gather(most_positives).max()), config.max_atss_positive_queries)
    counts = torch.stack(
        [
            torch.stack([c[name] for name in LOSS_NORMALIZERS])
            for c in (count_loss_normalizers(config, t, slots) for t in targets)
        ]
    ).sum(0)
    counts = accelerator.reduce(counts, reduction="sum")
    normalizers = dict(zip(LOSS_NORMALIZERS, counts.unbind()))
    return [dataclasses.replace(c, loss_normalizers=normalizers, atss_query_slots=slots) for c in contexts]
