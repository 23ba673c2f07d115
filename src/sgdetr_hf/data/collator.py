"""Batch collation: schema rows with features -> the padded tensors and ``labels`` the model takes.

The model's call is ``model(video_features, video_mask, text_features, text_mask, labels=...)``. The model
L2-normalises the features and appends the temporal endpoint feature itself, so the collator only pads, masks
and builds the targets, including every random choice of the training targets: each sample's draws come
from its own generator seeded by (seed, epoch, qid), so they do not depend on the batch a sample lands in,
the number of processes or DataLoader workers, or how many batches came before (resume needs no replay).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from ..targets_sgdetr import SAMPLING_SEED_RANGE, sample_margin_pairs
from .schema import source_video_id


def _as_matrix(value: Any, name: str, qid: str) -> torch.Tensor:
    """A (rows, d) float32 tensor from a numpy array, tensor or nested list; ValueError otherwise."""
    # a value beyond float32 becomes Inf, refused by the caller with the sample's qid
    with np.errstate(over="ignore"):
        matrix = torch.as_tensor(np.asarray(value, dtype=np.float32))
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(
            f"sample {qid!r}: {name} must be a non-empty (rows, d) matrix, got shape {tuple(matrix.shape)}; "
            "check the feature files this dataset was built from"
        )
    return matrix


def _or_empty(value: Any) -> Any:
    """HD-only rows store ``None`` (lighthouse files) or ``[]`` for absent windows and clip ids."""
    return [] if value is None else value


def _annotator_sums(saliency_scores: Any) -> torch.Tensor:
    """(R,) float32 row sums of a (R, A) score list; A is 3 for QVHighlights, 1 for binary and TVSum."""
    scores = np.asarray(_or_empty(saliency_scores), dtype=np.float32)
    return torch.from_numpy(
        scores.reshape(scores.shape[0], -1).sum(axis=1) if scores.size else np.zeros(0, np.float32)
    )


class MomentRetrievalCollator:
    """Pads a list of schema rows (see :mod:`sgdetr_hf.data.schema`) into one model batch.

    Each row needs ``video_features`` (L_b, d_v), ``text_features`` (N_b, d_t) and the annotation
    columns ``qid, vid, query, duration, clip_length, relevant_windows, relevant_clip_ids,
    saliency_scores``.

    Returns a dict with

    - ``video_features`` (B, L, d_v) float32, zeros at padding; ``video_mask`` (B, L) long, 1 = real clip;
    - ``text_features`` (B, N, d_t) float32; ``text_mask`` (B, N) long;
    - ``labels``: B dicts with ``spans`` (K_b, 2) float32 normalised (center, width) relative to
      ``T_b = L_b * clip_length`` (at most ``max_windows``: a seeded random subset, kept in time
      order, when a sample has more), ``saliency_scores`` (L_b,) float32 (row sums of the annotators'
      scores, 0 = not relevant; binary highlight targets are ``saliency_scores > 0``), ``video_id`` (the
      source video, :func:`~sgdetr_hf.data.schema.source_video_id`), the margin-loss clip pairs
      ``saliency_pos_idx`` / ``saliency_neg_idx`` (P,) long and ``sampling_seed`` (float, the key of the
      sample's ATSS-positive query subset);
    - ``meta``: ``qid``, ``vid``, ``query`` (lists of B str), ``duration``, ``clip_length`` (B,) float32
      seconds. The training loop keeps ``meta`` out of the model call.

    Args:
        max_clips: keep only the first ``max_clips`` clips of each video (75 for QVHighlights and
            InterVid-MR); windows are clipped to the kept range and dropped when fully outside it.
        max_text_tokens: keep only the first ``max_text_tokens`` token features.
        max_windows: the most ground-truth windows per sample (5, as in CG-DETR).
        num_margin_pairs: margin-ranking clip pairs per sample (``config.num_saliency_pairs``).
        seed: with the epoch (:meth:`set_epoch`) and the sample's qid, the seed of every random choice.
    """

    def __init__(
        self,
        max_clips: int | None = None,
        max_text_tokens: int | None = None,
        max_windows: int = 5,
        num_margin_pairs: int = 2,
        seed: int = 0,
    ):
        for name, value in (("max_clips", max_clips), ("max_text_tokens", max_text_tokens)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be None or >= 1, got {value}")
        if max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {max_windows}")
        if num_margin_pairs < 1:
            raise ValueError(f"num_margin_pairs must be >= 1, got {num_margin_pairs}")
        self.max_clips = max_clips
        self.max_text_tokens = max_text_tokens
        self.max_windows = max_windows
        self.num_margin_pairs = num_margin_pairs
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the random choices of ``epoch`` (call before each epoch, like a sampler's)."""
        self.epoch = epoch

    def _sample_generator(self, qid: str) -> np.random.Generator:
        """The sample's own generator: a function of (seed, epoch, qid) only (crc32 is stable across runs)."""
        return np.random.default_rng([self.seed, self.epoch, zlib.crc32(qid.encode())])

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if len(rows) == 0:
            raise ValueError("cannot collate an empty batch")
        qids = [str(row["qid"]) for row in rows]
        videos = [
            _as_matrix(row["video_features"], "video_features", q)[: self.max_clips]
            for row, q in zip(rows, qids)
        ]
        texts = [
            _as_matrix(row["text_features"], "text_features", q)[: self.max_text_tokens]
            for row, q in zip(rows, qids)
        ]
        for name, matrices in (("video_features", videos), ("text_features", texts)):
            for qid, matrix in zip(qids, matrices):
                # the model's own check can only name a batch position; here the sample is known
                if bad_rows := (~torch.isfinite(matrix).all(1)).nonzero().flatten().tolist():
                    raise ValueError(
                        f"sample {qid!r}: {name} hold NaN or Inf in {len(bad_rows)} rows (the first: row "
                        f"{bad_rows[0]}); check or re-extract the feature files this dataset was built from"
                    )
            dims = {m.shape[1] for m in matrices}
            if len(dims) > 1:
                raise ValueError(
                    f"{name} widths differ inside one batch: {sorted(dims)}; mixed feature sets?"
                )

        num_clips = torch.tensor([v.shape[0] for v in videos])
        num_tokens = torch.tensor([t.shape[0] for t in texts])
        video_features = pad_sequence(videos, batch_first=True)
        text_features = pad_sequence(texts, batch_first=True)
        video_mask = (torch.arange(video_features.shape[1]) < num_clips[:, None]).long()
        text_mask = (torch.arange(text_features.shape[1]) < num_tokens[:, None]).long()

        clip_length = torch.tensor([float(row["clip_length"]) for row in rows], dtype=torch.float32)
        if not bool((clip_length > 0).all()):
            raise ValueError(f"clip_length must be > 0 seconds, got {clip_length.tolist()} for qids {qids}")
        saliency = self._saliency(rows, qids, num_clips, video_features.shape[1])
        # per sample, in this order: the sampling seed, the margin-pair uniforms, the window-subset keys
        generators = [self._sample_generator(qid) for qid in qids]
        sampling_seeds = [float(g.random()) * SAMPLING_SEED_RANGE for g in generators]
        uniforms = np.stack([g.random((2, self.num_margin_pairs)) for g in generators], axis=-1)  # (2, P, B)
        pos_idx, neg_idx, _ = sample_margin_pairs(
            saliency, video_mask.bool(), torch.from_numpy(uniforms).to(saliency.dtype)
        )
        spans = self._spans(rows, qids, num_clips * clip_length, generators)

        labels = [
            {
                "spans": spans[b],
                "saliency_scores": saliency[b, : num_clips[b]],
                "video_id": source_video_id(str(row["vid"])),
                "saliency_pos_idx": pos_idx[b],
                "saliency_neg_idx": neg_idx[b],
                "sampling_seed": sampling_seeds[b],
            }
            for b, row in enumerate(rows)
        ]
        meta = {
            "qid": qids,
            "vid": [str(row["vid"]) for row in rows],
            "query": [str(row["query"]) for row in rows],
            "duration": torch.tensor([float(row["duration"]) for row in rows], dtype=torch.float32),
            "clip_length": clip_length,
        }
        return {
            "video_features": video_features,
            "video_mask": video_mask,
            "text_features": text_features,
            "text_mask": text_mask,
            "labels": labels,
            "meta": meta,
        }

    @staticmethod
    def _saliency(
        rows: Sequence[Mapping[str, Any]], qids: list[str], num_clips: torch.Tensor, length: int
    ) -> torch.Tensor:
        """(B, L) per-clip targets: the annotators' scores summed, scattered at ``relevant_clip_ids``."""
        clip_ids = [
            torch.as_tensor(np.asarray(_or_empty(row["relevant_clip_ids"]), dtype=np.int64)).reshape(-1)
            for row in rows
        ]
        scores = [_annotator_sums(row["saliency_scores"]) for row in rows]
        num_ids = torch.tensor([len(ids) for ids in clip_ids])
        num_scores = torch.tensor([len(row_scores) for row_scores in scores])
        mismatched = torch.nonzero(num_ids != num_scores).flatten().tolist()
        if mismatched:
            b = mismatched[0]
            raise ValueError(
                f"sample {qids[b]!r}: {num_ids[b]} relevant_clip_ids but {num_scores[b]} saliency_scores rows"
            )
        batch_index = torch.repeat_interleave(torch.arange(len(rows)), num_ids)
        all_ids = torch.cat(clip_ids)
        all_scores = torch.cat(scores)
        if bool((all_ids < 0).any()):
            raise ValueError(f"negative relevant_clip_ids in batch {qids}")
        # Clips past the (capped) video end carry no target.
        inside = all_ids < num_clips[batch_index]
        saliency = torch.zeros(len(rows), length)
        saliency[batch_index[inside], all_ids[inside]] = all_scores[inside]
        return saliency

    def _spans(
        self,
        rows: Sequence[Mapping[str, Any]],
        qids: list[str],
        extent: torch.Tensor,
        generators: list[np.random.Generator],
    ) -> list[torch.Tensor]:
        """Per sample (K_b, 2) normalised (center, width) spans, at most ``max_windows`` each.

        Args:
            extent: (B,) T_b = L_b * clip_length, seconds covered by the (capped) features.
            generators: the samples' generators (the window subset of a sample with too many windows).
        """
        windows = [
            torch.as_tensor(np.asarray(_or_empty(row["relevant_windows"]), dtype=np.float32)).reshape(-1, 2)
            for row in rows
        ]
        counts = torch.tensor([len(w) for w in windows])
        batch_index = torch.repeat_interleave(torch.arange(len(rows)), counts)
        seconds = torch.cat(windows)
        if bool((seconds[:, 1] < seconds[:, 0]).any()):
            bad = sorted({qids[b] for b in batch_index[seconds[:, 1] < seconds[:, 0]].tolist()})
            raise ValueError(f"relevant_windows with end < start in samples {bad}")
        normalised = (seconds / extent[batch_index, None]).clamp(0.0, 1.0)
        keep = normalised[:, 1] > normalised[:, 0]  # windows past a capped video's end vanish
        keys = torch.from_numpy(np.concatenate([g.random(len(w)) for g, w in zip(generators, windows)]))
        keep &= self._window_subset(batch_index, keep, keys, len(rows))
        normalised, batch_index = normalised[keep], batch_index[keep]
        spans = torch.stack([normalised.mean(dim=1), normalised[:, 1] - normalised[:, 0]], dim=1)
        return list(torch.split(spans, torch.bincount(batch_index, minlength=len(rows)).tolist()))

    def _window_subset(
        self, batch_index: torch.Tensor, valid: torch.Tensor, key: torch.Tensor, batch_size: int
    ) -> torch.Tensor:
        """(W,) bool: a random ``max_windows`` of each sample's valid windows (all of them when fewer).

        Args:
            batch_index: (W,) sample of each window. valid: (W,) bool. key: (W,) float64 uniforms in [0, 1).
        """
        counts = torch.bincount(batch_index[valid], minlength=batch_size)
        if int(counts.max()) <= self.max_windows:
            return torch.ones_like(valid)
        # Sort by (sample, validity, random key); a window is kept when its rank inside its sample is small.
        order = torch.argsort(batch_index * 4.0 + (~valid) * 2.0 + key)
        starts = torch.cumsum(torch.bincount(batch_index, minlength=batch_size), 0) - torch.bincount(
            batch_index, minlength=batch_size
        )
        rank = torch.arange(len(batch_index)) - starts[batch_index[order]]
        chosen = torch.zeros_like(valid)
        chosen[order] = rank < self.max_windows
        return chosen
