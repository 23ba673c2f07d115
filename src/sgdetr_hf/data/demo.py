"""Demo dataset: REAL QVHighlights queries, windows and saliency with SYNTHETIC features (toy generator).

The annotations are a fixed subset of QVHighlights train / val shipped in the package
(``demo_qvhighlights.jsonl``, CC BY-NC-SA 4.0, Lei et al. 2021; provenance in ``demo_qvhighlights.md``),
so the demo works on a fresh clone without ``../shared/data``. The features are not from any video: each
query's content words are hashed onto the toy vocabulary of :class:`~sgdetr_hf.data.synthetic.ToyGroundingTask`
and planted in its video's relevant clips with a strength that follows the annotated saliency. The task
is therefore learnable, and a model trained on it says nothing about real videos.

``build_demo_dataset(folder)`` writes the same on-disk format as the benchmark builder (config ``demo``,
splits ``train`` / ``validation``), so training loads it with ``load_dataset(folder, "demo")`` /
:func:`~sgdetr_hf.data.load_moment_retrieval`.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_text, strict_json
from .builder import ArrayFeatures, BuildReport, build_dataset
from .readers import read_annotations
from .schema import ANNOTATION_COLUMNS, num_clips
from .synthetic import PlantedQuery, ToyGroundingTask, ToyTaskConfig

DEMO_NAME = "demo"
DEMO_ANNOTATIONS = Path(__file__).with_name("demo_qvhighlights.jsonl")
_SPLIT_OF_FILE = {"train": "highlight_train_release.jsonl", "validation": "highlight_val_release.jsonl"}

_CARD = """
# SG-DETR demo data (SYNTHETIC features)

**The features in this dataset are synthetic.** They come from no video and no feature extractor: the
content words of each real query are hashed onto a toy vocabulary of random {video_dim}-d word vectors and
planted, with noise, in the clips of the query's moments (more strongly in clips with higher annotated
saliency), amid background and distractor clips that carry some of the query's words
(`sgdetr_hf.data.synthetic`). It exists so that the SG-DETR training loop can be demonstrated on a CPU in
minutes. Numbers measured on it say nothing about moment retrieval on real videos.

The annotations are real: {num_train} train and {num_validation} validation queries of **QVHighlights**
(Lei, Berg, Bansal, NeurIPS 2021), with their relevant windows and three-annotator saliency scores,
licensed **CC BY-NC-SA 4.0** (attribution, non-commercial, share-alike). This dataset is shared under the
same licence.

## Generation

```python
from sgdetr_hf.data.demo import build_demo_dataset
build_demo_dataset("demo-data", seed={seed}, video_dim={video_dim}, text_dim={text_dim})
```

Configs: `demo` (query rows: schema columns + `text_features` (N, {text_dim}) float16) and `demo-features`
(`vid`, `video_features` (L, {video_dim}) float16), splits `train` / `validation`. Schema:
`sgdetr_hf.data.schema`.

## Citation

```bibtex
@inproceedings{{lei2021qvhighlights,
  title={{QVHighlights: Detecting Moments and Highlights in Videos via Natural Language Queries}},
  author={{Lei, Jie and Berg, Tamara L. and Bansal, Mohit}},
  booktitle={{NeurIPS}},
  year={{2021}}
}}
```
"""


def select_demo_annotations(
    qvhighlights_dir: str | Path, num_train: int = 600, num_validation: int = 150
) -> str:
    """The JSON Lines text of the shipped subset: the queries with the smallest CRC32 of their qid.

    Regenerate ``demo_qvhighlights.jsonl`` with
    ``Path(DEMO_ANNOTATIONS).write_text(select_demo_annotations("../shared/data/qvhighlights"))``.
    Each line is the original QVHighlights record plus ``"split"``.
    """
    lines = []
    for split, count in (("train", num_train), ("validation", num_validation)):
        path = Path(qvhighlights_dir) / _SPLIT_OF_FILE[split]
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        records.sort(key=lambda record: zlib.crc32(str(record["qid"]).encode()))
        lines += [strict_json({**record, "split": split}) for record in records[:count]]
    return "\n".join(lines) + "\n"


def demo_annotations(path: str | Path = DEMO_ANNOTATIONS) -> dict[str, list[dict[str, Any]]]:
    """The shipped demo annotations as schema rows, by split."""
    rows = read_annotations(path, "qvhighlights")
    splits = [
        json.loads(line)["split"]
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    by_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row, split in zip(rows, splits, strict=True):
        by_split[split].append(row)
    return dict(by_split)


def demo_features(
    rows: list[dict[str, Any]], task: ToyGroundingTask, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Toy features for real annotations: every query of a video planted in that video's clips.

    Returns ``(videos, texts)``: vid -> (L, d_v) float16 with ``L = ceil(duration / 2)``, and
    qid -> (N, d_t) float16. Each video and query has its own generator, seeded by ``seed`` and its id.
    """
    queries_of_video: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        queries_of_video[row["vid"]].append(row)
    videos, texts = {}, {}
    for vid, queries in queries_of_video.items():
        length = num_clips(queries[0]["duration"], queries[0]["clip_length"])
        planted = []
        for row in queries:
            words = task.hash_words(row["query"])
            clip_ids = np.asarray(row["relevant_clip_ids"], dtype=np.int64)
            inside = clip_ids < length
            sums = np.asarray(row["saliency_scores"], dtype=np.float64).reshape(len(clip_ids), -1).sum(axis=1)
            strength = task.strength_from_saliency(length, clip_ids[inside], sums[inside], 12.0)
            planted.append(PlantedQuery(words, strength))
            texts[row["qid"]] = task.text_features(
                words, np.random.default_rng([seed, 1, zlib.crc32(row["qid"].encode())])
            )
        videos[vid] = task.video_features(
            length, planted, np.random.default_rng([seed, 0, zlib.crc32(vid.encode())])
        )
    return videos, texts


def build_demo_dataset(
    output_dir: str | Path,
    *,
    num_train: int | None = None,
    num_validation: int | None = None,
    seed: int = 0,
    video_dim: int = 64,
    text_dim: int = 64,
    annotations: str | Path = DEMO_ANNOTATIONS,
) -> BuildReport:
    """Write the demo dataset (config ``demo``) into ``output_dir``; a few seconds on a CPU.

    Args:
        output_dir: the dataset folder (load it with ``load_dataset(str(output_dir), "demo")``).
        num_train, num_validation: use only the first queries of each split (default: all shipped,
            600 / 150).
        seed: seed of the toy vocabulary and of every feature.
        video_dim, text_dim: feature widths (``video_dim >= text_dim``).
        annotations: a JSON Lines file in the shipped format (QVHighlights records plus ``"split"``).
    """
    task = ToyGroundingTask(ToyTaskConfig(video_dim=video_dim, text_dim=text_dim), seed=seed)
    splits = demo_annotations(annotations)
    for split, limit in (("train", num_train), ("validation", num_validation)):
        if limit is not None:
            if limit < 1:
                raise ValueError(f"num_{split} must be >= 1, got {limit}")
            splits[split] = splits[split][:limit]
    all_rows = [row for rows in splits.values() for row in rows]
    videos, texts = demo_features(all_rows, task, seed)
    card = _CARD.format(
        num_train=len(splits["train"]),
        num_validation=len(splits["validation"]),
        seed=seed,
        video_dim=video_dim,
        text_dim=text_dim,
    )
    metadata = {
        "license": "cc-by-nc-sa-4.0",
        "pretty_name": "SG-DETR demo data (synthetic features, QVHighlights annotations)",
        "tags": ["synthetic", "video-moment-retrieval", "highlight-detection"],
    }
    rows_by_split = {
        split: [{k: row[k] for k in ANNOTATION_COLUMNS} for row in rows] for split, rows in splits.items()
    }
    report = build_dataset(
        output_dir,
        DEMO_NAME,
        rows_by_split,
        ArrayFeatures(videos, texts),
        card_body=card,
        card_metadata=metadata,
    )
    atomic_write_text(
        Path(output_dir) / "LICENSE.md", "Annotations: QVHighlights, CC BY-NC-SA 4.0. Features: synthetic.\n"
    )
    return report
