"""SYNTHETIC toy grounding task: generated features with planted moments, for tests, demos and checks.

Nothing here comes from a real video or a real feature extractor. A fixed vocabulary of random word
vectors stands in for the text encoder's embedding space, and clip features are mixtures of word
vectors, the way a video-text model's clip embedding sits near the captions that describe it:

- a query is a few vocabulary words; its token features are those words' vectors plus noise, led by a
  sentence token (the normalised mean, like row 0 = [CLS] of the real text features);
- every clip carries a few random background words;
- the clips of the query's moments carry the query's words, mixed in with a strength that follows the
  clip's annotated saliency (grade 4 = almost pure query, grade 1 = a quarter);
- distractor clips outside the moments carry only *some* of the query's words, at full strength, so
  word overlap alone does not find the moments;
- every clip vector is normalised and receives Gaussian noise.

Video and text live in one space, as InternVideo2's aligned video-text features do: when
``video_dim > text_dim`` the word space is the first ``text_dim`` video coordinates.

Rows follow the dataset schema (:mod:`sgdetr_hf.data.schema`) plus ``video_features`` (L, d_v) and
``text_features`` (N, d_t) float16, and :meth:`ToyGroundingTask.batches` collates them into model
batches. Everything is a pure function of ``seed`` (the vocabulary) and ``(split, index)`` (a
sample): sample ``i`` is the same whether 10 or 10,000 samples are drawn.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .collator import MomentRetrievalCollator

# Seed-stream ids: one numpy Generator per source of randomness.
_VOCABULARY_STREAM = 0
_SPLIT_STREAMS = {"train": 1, "validation": 2, "test": 3}
_LAYOUT_STREAM, _VIDEO_STREAM, _TEXT_STREAM = 0, 1, 2
#: Words dropped before hashing real query text onto the toy vocabulary (they carry no grounding signal).
_STOPWORDS = frozenset(
    {"a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "by", "for", "with", "is", "are"}
)


@dataclass(frozen=True)
class ToyTaskConfig:
    """Shape and difficulty of the toy task. Defaults: small dims so CPU training takes seconds."""

    video_dim: int = 64
    text_dim: int = 64
    vocab_size: int = 512
    clip_length: float = 2.0
    min_clips: int = 16
    max_clips: int = 75
    min_query_words: int = 3
    max_query_words: int = 8
    max_windows: int = 3
    min_window_clips: int = 1
    max_window_clips: int = 12
    background_words: int = 3
    distractor_fraction: float = 0.2
    """Fraction of the non-moment clips that carry part of a query."""
    distractor_word_fraction: float = 0.5
    """Fraction of the query's words a distractor clip carries."""
    video_noise: float = 0.3
    """Norm of the Gaussian noise added to each unit-norm clip vector."""
    text_noise: float = 0.2
    num_annotators: int = 3

    def __post_init__(self):
        positive = ("video_dim", "text_dim", "vocab_size", "min_clips", "min_query_words", "max_windows")
        for name in positive + ("min_window_clips", "background_words", "num_annotators"):
            if getattr(self, name) < 1:
                raise ValueError(f"ToyTaskConfig.{name} must be >= 1, got {getattr(self, name)}")
        for low, high in (
            ("min_clips", "max_clips"),
            ("min_query_words", "max_query_words"),
            ("min_window_clips", "max_window_clips"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"ToyTaskConfig.{low} ({getattr(self, low)}) > {high} ({getattr(self, high)})"
                )
        if self.max_query_words > self.vocab_size:
            raise ValueError(f"max_query_words ({self.max_query_words}) > vocab_size ({self.vocab_size})")
        if self.max_window_clips > self.min_clips:
            raise ValueError(
                f"max_window_clips ({self.max_window_clips}) must fit in min_clips ({self.min_clips})"
            )
        if self.video_dim < self.text_dim:
            raise ValueError(
                f"video_dim ({self.video_dim}) must be >= text_dim ({self.text_dim}): words embed in video space"
            )
        for name in ("distractor_fraction", "distractor_word_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ToyTaskConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.clip_length <= 0 or self.video_noise < 0 or self.text_noise < 0:
            raise ValueError("clip_length must be > 0 and the noise levels >= 0")


@dataclass(frozen=True)
class PlantedQuery:
    """One query planted in a video.

    Attributes:
        word_ids: (n,) int vocabulary ids of the query's words.
        strength: (L,) float in [0, 1], how much of each clip's content is the query (0 = absent).
    """

    word_ids: np.ndarray
    strength: np.ndarray


class ToyGroundingTask:
    """A seeded toy moment-retrieval / highlight-detection task (SYNTHETIC; see the module docstring).

    Args:
        config: dims and difficulty.
        seed: seed of the vocabulary and of every sample; two tasks with the same seed and config are
            identical, and the splits of one task share its vocabulary.
    """

    def __init__(self, config: ToyTaskConfig | None = None, seed: int = 0):
        self.config = config or ToyTaskConfig()
        self.seed = seed
        rng = np.random.default_rng([seed, _VOCABULARY_STREAM])
        cfg = self.config
        # (V, d_t) unit word vectors: random directions are nearly orthogonal in d >= 64.
        words = rng.standard_normal((cfg.vocab_size, cfg.text_dim))
        self.word_vectors = words / np.linalg.norm(words, axis=1, keepdims=True)
        # (d_t, d_v): the word space is the first d_t video coordinates (a shared video-text space).
        self.text_to_video = np.eye(cfg.text_dim, cfg.video_dim)

    # ----------------------------------------------------------------------------------------- parts
    def hash_words(self, text: str) -> np.ndarray:
        """Vocabulary ids of a real query's content words (stable CRC32 hashing, stopwords dropped).

        Returns (n,) int64, unique, in order of first appearance; at least one id (the whole text's hash)
        so every query is plantable.
        """
        tokens = [t.strip(".,!?;:'\"()").lower() for t in text.split()]
        tokens = [t for t in tokens if t and t not in _STOPWORDS] or [text.lower()]
        ids = np.array([zlib.crc32(t.encode()) % self.config.vocab_size for t in tokens], dtype=np.int64)
        _, first = np.unique(ids, return_index=True)
        return ids[np.sort(first)]

    def text_features(self, word_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n + 1, d_t) float16 token features: a sentence token then one noisy vector per word."""
        tokens = self.word_vectors[word_ids]
        sentence = tokens.mean(axis=0, keepdims=True)
        tokens = np.concatenate([sentence / np.linalg.norm(sentence), tokens])
        noise = rng.standard_normal(tokens.shape) * (self.config.text_noise / np.sqrt(self.config.text_dim))
        return (tokens + noise).astype(np.float16)

    def video_features(
        self, num_clips: int, queries: Sequence[PlantedQuery], rng: np.random.Generator
    ) -> np.ndarray:
        """(L, d_v) float16 clip features with every query of ``queries`` planted, plus distractors.

        A clip's word mixture is ``(1 - s) * background + sum_q s_q * words_q`` with ``s = min(1, sum_q s_q)``
        (the query strengths are rescaled when they overlap to more than 1). Distractor clips, drawn among
        the clips where a query is absent, carry ``distractor_word_fraction`` of its words at strength 1.
        """
        cfg = self.config
        vocab = cfg.vocab_size
        background = np.zeros((num_clips, vocab))
        np.add.at(
            background,
            (
                np.repeat(np.arange(num_clips), cfg.background_words),
                rng.integers(vocab, size=num_clips * cfg.background_words),
            ),
            1.0 / cfg.background_words,
        )
        strengths, mixtures = [], []
        for query in queries:  # a handful per video; each step is vectorised over clips
            strength = np.asarray(query.strength, dtype=np.float64)
            strengths.append(strength)
            mixtures.append(np.bincount(query.word_ids, minlength=vocab) / len(query.word_ids))
            absent = np.flatnonzero(strength == 0)
            num_distractors = round(cfg.distractor_fraction * len(absent))
            if num_distractors and len(query.word_ids) > 1:
                num_words = max(1, round(cfg.distractor_word_fraction * len(query.word_ids)))
                clips = rng.choice(absent, size=num_distractors, replace=False)
                words = rng.permuted(np.tile(query.word_ids, (num_distractors, 1)), axis=1)[:, :num_words]
                distractor = np.zeros(num_clips)
                distractor[clips] = 1.0
                partial = np.zeros((num_clips, vocab))
                np.add.at(partial, (np.repeat(clips, num_words), words.reshape(-1)), 1.0 / num_words)
                strengths.append(distractor)
                mixtures.append(partial)
        strength = np.stack(strengths) if strengths else np.zeros((0, num_clips))  # (Q', L)
        total = strength.sum(axis=0)
        scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-12), 1.0)
        signal = sum(
            (s * scale)[:, None] * (m if m.ndim == 2 else m[None, :])
            for s, m in zip(strength, mixtures, strict=True)
        )
        weights = (1.0 - np.minimum(total, 1.0))[:, None] * background + signal
        clips = weights @ self.word_vectors @ self.text_to_video
        clips /= np.linalg.norm(clips, axis=1, keepdims=True)
        clips += rng.standard_normal(clips.shape) * (cfg.video_noise / np.sqrt(cfg.video_dim))
        return clips.astype(np.float16)

    @staticmethod
    def strength_from_saliency(
        num_clips: int, clip_ids: np.ndarray, clip_scores: np.ndarray, max_score: float
    ) -> np.ndarray:
        """(L,) planting strength: ``0.25 + 0.75 * score / max_score`` on the relevant clips, 0 elsewhere.

        The 0.25 floor keeps every annotated clip visibly relevant, even one its annotators scored 0.
        """
        strength = np.zeros(num_clips)
        strength[np.asarray(clip_ids, dtype=np.int64)] = (
            0.25 + 0.75 * np.asarray(clip_scores, dtype=np.float64) / max_score
        )
        return strength

    def _layout(self, rng: np.random.Generator) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """Random clip count, non-overlapping windows (clip index runs) and annotator scores.

        Returns ``(L, windows (K, 2) int [first, last + 1) clips, clip_ids (R,), scores (R, A) int 0..4)``.
        """
        cfg = self.config
        num_clips = int(rng.integers(cfg.min_clips, cfg.max_clips + 1))
        num_windows = int(rng.integers(1, cfg.max_windows + 1))
        lengths = rng.integers(cfg.min_window_clips, cfg.max_window_clips + 1, size=num_windows)
        # Keep the windows that fit with a one-clip gap between neighbours (the first always fits).
        fits = np.cumsum(lengths + 1) - 1 <= num_clips
        lengths = lengths[fits]
        free = num_clips - lengths.sum() - (len(lengths) - 1)
        gaps = rng.multinomial(free, np.full(len(lengths) + 1, 1.0 / (len(lengths) + 1)))[:-1]
        starts = np.cumsum(gaps) + np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
        windows = np.stack([starts, starts + lengths], axis=1)
        clip_ids = np.concatenate([np.arange(s, e) for s, e in windows])
        # True saliency peaks mid-window (a triangle from ~0.4 to 1); annotators add +-1 grade of noise.
        position = np.concatenate([(np.arange(n) + 0.5) / n for n in lengths])
        true_score = 4.0 * (0.4 + 0.6 * (1.0 - np.abs(2.0 * position - 1.0)))
        noise = rng.normal(0.0, 0.6, size=(len(clip_ids), cfg.num_annotators))
        scores = np.clip(np.rint(true_score[:, None] + noise), 0, 4).astype(np.int64)
        return num_clips, windows, clip_ids, scores

    # ---------------------------------------------------------------------------------------- samples
    def sample(self, index: int, split: str = "train") -> dict[str, Any]:
        """Sample ``index`` of ``split`` as a schema row with ``video_features`` and ``text_features``."""
        if split not in _SPLIT_STREAMS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_STREAMS)}")
        if index < 0:
            raise ValueError(f"sample index must be >= 0, got {index}")
        cfg = self.config
        key = [self.seed, _SPLIT_STREAMS[split], index]
        layout_rng, video_rng, text_rng = (
            np.random.default_rng(key + [stream]) for stream in (_LAYOUT_STREAM, _VIDEO_STREAM, _TEXT_STREAM)
        )
        num_clips, windows, clip_ids, scores = self._layout(layout_rng)
        num_words = int(layout_rng.integers(cfg.min_query_words, cfg.max_query_words + 1))
        word_ids = layout_rng.choice(cfg.vocab_size, size=num_words, replace=False)
        strength = self.strength_from_saliency(
            num_clips, clip_ids, scores.sum(axis=1), 4.0 * cfg.num_annotators
        )
        return {
            "qid": f"toy-{split}-{index}",
            "vid": f"toy-{split}-{index}",
            "query": " ".join(f"w{w}" for w in word_ids),
            "duration": float(num_clips * cfg.clip_length),
            "clip_length": float(cfg.clip_length),
            "relevant_windows": (windows * cfg.clip_length).astype(np.float64).tolist(),
            "relevant_clip_ids": clip_ids.tolist(),
            "saliency_scores": scores.tolist(),
            "domain": "",
            "label": [],
            "video_features": self.video_features(num_clips, [PlantedQuery(word_ids, strength)], video_rng),
            "text_features": self.text_features(word_ids, text_rng),
        }

    def samples(self, num_samples: int, split: str = "train") -> list[dict[str, Any]]:
        """The first ``num_samples`` samples of ``split``."""
        return [self.sample(i, split) for i in range(num_samples)]

    def batches(
        self,
        num_samples: int,
        batch_size: int,
        split: str = "train",
        collator: MomentRetrievalCollator | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Model batches of the first ``num_samples`` samples, in order (the last batch may be smaller)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        collator = collator or MomentRetrievalCollator()
        rows = self.samples(num_samples, split)
        for start in range(0, num_samples, batch_size):
            yield collator(rows[start : start + batch_size])
