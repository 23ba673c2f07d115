"""Helpers shared by the pipeline, CLI and Hub tests: a tiny SG-DETR + InternVideo2 model folder, and a toy
SG-DETR trained in seconds on a few fixed "concepts" of the synthetic grounding task."""

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sgdetr_hf import SGDetrConfig, SGDetrForMomentRetrieval
from sgdetr_hf.data import MomentRetrievalCollator, PlantedQuery, ToyGroundingTask, ToyTaskConfig
from sgdetr_hf.tiny_repo import TINY_SGDETR_CONFIG, save_tiny_encoder, tiny_sgdetr_model

TINY_SGDETR = TINY_SGDETR_CONFIG


def save_tiny_model_repo(directory: Path, seed: int = 0, **config) -> Path:
    """A random tiny SG-DETR in ``directory`` with a random tiny InternVideo2 encoder in ``directory/encoder``,
    in the format ``sgdetr train`` writes (``save_pretrained``: no ``custom_pipelines``, so the installed
    pipeline class loads it without ``trust_remote_code``). ``sgdetr build-tiny-repo``
    (:func:`sgdetr_hf.tiny_repo.build_tiny_repo`) writes the release format from the same models."""
    tiny_sgdetr_model(seed, **config).save_pretrained(directory)
    save_tiny_encoder(Path(directory) / "encoder")
    return Path(directory)


def edit_weights(folder: Path, drop: int = 0, add: dict[str, torch.Tensor] | None = None) -> list[str]:
    """Rewrite ``folder/model.safetensors`` without its first ``drop`` tensors (by name) and with ``add``; returns
    the names dropped. A model folder with a weight missing or unexpected, as a bad edit or export leaves it."""
    path = folder / "model.safetensors"
    tensors = load_file(path)
    dropped = sorted(tensors)[:drop]
    kept = {name: tensor for name, tensor in tensors.items() if name not in dropped}
    save_file({**kept, **(add or {})}, path, metadata={"format": "pt"})
    return dropped


def damage_file(path: Path, how: str) -> Path:
    """Make ``path`` a ``"zero-byte"`` file, ``"truncated"`` to half its size, with a ``"bad-header"`` (its
    8-byte header length overwritten), or (a safetensors file) with a ``"random-body"`` under its intact header,
    as interrupted downloads and disk errors leave files."""
    data = path.read_bytes()
    if how == "random-body":
        body = 8 + int.from_bytes(data[:8], "little")  # where a safetensors file's tensors start
        damaged = data[:body] + np.random.default_rng(0).bytes(len(data) - body)
    else:
        damaged = {
            "zero-byte": b"",
            "truncated": data[: len(data) // 2],
            "bad-header": b"\xff" * 8 + data[8:],
        }[how]
    path.write_bytes(damaged)
    return path


class ToyConcepts:
    """SYNTHETIC: ``num_concepts`` fixed queries (5 vocabulary words each) of the toy grounding task, planted in
    short videos for training and anywhere in a video of any length for testing."""

    def __init__(self, num_concepts: int = 4, seed: int = 0):
        self.task = ToyGroundingTask(
            ToyTaskConfig(video_dim=64, text_dim=64, distractor_fraction=0.0), seed=seed
        )
        rng = np.random.default_rng([seed, 1])
        self.words = [
            rng.choice(self.task.config.vocab_size, size=5, replace=False) for _ in range(num_concepts)
        ]

    def video(self, concept: int, num_clips: int, first: int, length: int, rng, scores=None) -> np.ndarray:
        """(num_clips, 64) clip features with ``concept`` planted on clips ``first .. first + length - 1``, as
        strongly as their saliency ``scores`` (length,) out of 12 say (default: 12, the strongest)."""
        scores = np.full(length, 12) if scores is None else scores
        strength = self.task.strength_from_saliency(num_clips, np.arange(first, first + length), scores, 12.0)
        return self.task.video_features(num_clips, [PlantedQuery(self.words[concept], strength)], rng)

    def query(self, concept: int, rng) -> np.ndarray:
        """(6, 64) token features of ``concept`` (a sentence token, then its 5 words)."""
        return self.task.text_features(self.words[concept], rng)

    def training_rows(self, num_rows: int, rng, max_clips: int = 75) -> list[dict]:
        """Schema rows of 20..max_clips clips, one moment of 3..10 clips each; ``vid`` is the concept, so two
        rows of one concept are never used as a negative pair."""
        rows = []
        for index in range(num_rows):
            concept, num_clips = index % len(self.words), int(rng.integers(20, max_clips + 1))
            length = int(rng.integers(3, 11))
            first = int(rng.integers(0, num_clips - length + 1))
            grades = rng.integers(2, 5, size=(length, 3))
            rows.append(
                {
                    "qid": str(index),
                    "vid": f"concept-{concept}",
                    "query": f"concept {concept}",
                    "duration": 2.0 * num_clips,
                    "clip_length": 2.0,
                    "relevant_windows": [[2.0 * first, 2.0 * (first + length)]],
                    "relevant_clip_ids": list(range(first, first + length)),
                    "saliency_scores": grades.tolist(),
                    "video_features": self.video(concept, num_clips, first, length, rng, grades.sum(axis=1)),
                    "text_features": self.query(concept, rng),
                }
            )
        return rows


def train_toy_model(concepts: ToyConcepts, steps: int = 64, seed: int = 0) -> SGDetrForMomentRetrieval:
    """A tiny SG-DETR (64-d features, at most 75 clips) trained for ``steps`` AdamW steps on ``concepts``."""
    torch.manual_seed(seed)
    config = SGDetrConfig(**{**TINY_SGDETR, "video_feature_dim": 64, "text_feature_dim": 64, "dropout": 0.0,
                             "input_dropout": 0.0, "use_dn": False, "use_alignment": False})  # fmt: skip
    model = SGDetrForMomentRetrieval(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    collator = MomentRetrievalCollator()
    rows = concepts.training_rows(192, np.random.default_rng([seed, 2]))
    batches = [collator(rows[i : i + 32]) for i in range(0, len(rows), 32)]
    for step in range(steps):
        batch = batches[step % len(batches)]
        loss = model(
            **{k: batch[k] for k in ("video_features", "video_mask", "text_features", "text_mask", "labels")}
        ).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval()
