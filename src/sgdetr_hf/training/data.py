"""Loading a split of a built dataset for training or evaluation, and its collator."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from ..data import ANNOTATION_COLUMNS, MomentRetrievalCollator
from ..data.dataset import MomentRetrievalDataset, load_moment_retrieval
from ..data.schema import source_video_id
from .errors import RunInputError
from .recipe import TrainingRecipe

# Columns every split needs: the collator's inputs and the metrics' references.
HIGHLIGHT_ONLY_COLUMNS = ("label", "domain")  # read by the YouTube Highlights and TVSum metrics
REQUIRED_QUERY_COLUMNS = (
    *(c for c in ANNOTATION_COLUMNS if c not in HIGHLIGHT_ONLY_COLUMNS),
    "text_features",
)
REQUIRED_VIDEO_COLUMNS = ("vid", "video_features")


def _check_columns(dataset: MomentRetrievalDataset, recipe: TrainingRecipe, split: str) -> None:
    needed = REQUIRED_QUERY_COLUMNS
    if recipe.dataset_name in ("youtube_highlights", "tvsum"):
        needed += HIGHLIGHT_ONLY_COLUMNS
    for table, columns, config in (
        (dataset.queries, needed, recipe.dataset_config),
        (dataset.videos, REQUIRED_VIDEO_COLUMNS, f"{recipe.dataset_config}-features"),
    ):
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise RunInputError(
                f"dataset {recipe.dataset_path!r} config {config!r} split {split!r} lacks the column(s) "
                f"{missing} (it has {table.column_names}); build it with scripts/build_benchmark_dataset.py"
            )


def _load_failure(recipe: TrainingRecipe, split: str, error: Exception) -> str:
    """The message for a dataset that ``datasets`` could not load: the settings, its reason, what is expected."""
    path, config = Path(recipe.dataset_path), recipe.dataset_config
    what = f"cannot load split {split!r} of config {config!r} from dataset {recipe.dataset_path!r}"
    expected = "a folder built by scripts/build_benchmark_dataset.py or a Hub dataset id"
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return f"{what}: it is a model folder, not a dataset; expected {expected}"
    reason = str(error).strip() or type(error).__name__
    return f"{what}: {reason} (expected {expected}, with the configs {config!r} and {f'{config}-features'!r})"


def load_split(recipe: TrainingRecipe, split: str, max_samples: int | None = None) -> MomentRetrievalDataset:
    """One split of the recipe's dataset (a folder or a Hub id), restricted to ``recipe.domain`` when set.

    Raises:
        RunInputError: no ``dataset_path``, a folder or Hub id that is not such a dataset, an unknown
            config or split (``datasets``' reason included), a missing column (named), or no rows left.
    """
    if recipe.dataset_path is None:
        raise RunInputError(
            f"recipe {recipe.name!r} has no dataset_path: pass --dataset_path with a folder built by "
            "scripts/build_benchmark_dataset.py or a Hub dataset id"
        )
    try:
        dataset = load_moment_retrieval(
            recipe.dataset_path, recipe.dataset_config, split, revision=recipe.dataset_revision
        )
    # datasets: ValueError for an unknown config or split or files it cannot read as one format, OSError
    # (FileNotFoundError, ConnectionError) for no data files or an unreachable Hub id; the join: ValueError
    except (ValueError, OSError) as error:
        raise RunInputError(_load_failure(recipe, split, error)) from error
    _check_columns(dataset, recipe, split)
    queries = dataset.queries
    if recipe.domain is not None:
        queries = queries.filter(lambda domain: domain == recipe.domain, input_columns="domain")
    if max_samples is not None:
        queries = queries.select(range(min(max_samples, len(queries))))
    if len(queries) == 0:
        raise RunInputError(
            f"split {split!r} of {recipe.dataset_path!r} has no rows (domain={recipe.domain!r})"
        )
    return dataset if queries is dataset.queries else MomentRetrievalDataset(queries, dataset.videos)


def check_disjoint_videos(recipe: TrainingRecipe, train_set, eval_set) -> None:
    """Refuse an evaluation split that shares source videos (:func:`~sgdetr_hf.data.schema.source_video_id`)
    with the training split: its metrics, and the best model selected by them, would score videos the model
    trained on. Every published benchmark keeps its splits apart; ``eval_split == train_split`` is a deliberate
    look at the fit, and passes."""
    if recipe.eval_split == recipe.train_split:
        return

    def sources(dataset: MomentRetrievalDataset) -> set[str]:
        return {source_video_id(vid) for vid in dataset.queries.with_format(None)["vid"]}

    shared = sorted(sources(train_set) & sources(eval_set))
    if shared:
        raise RunInputError(
            f"{len(shared)} source video(s) of dataset {recipe.dataset_path!r} are in both split "
            f"{recipe.train_split!r} and split {recipe.eval_split!r}, e.g. {shared[:5]}: the evaluation would "
            "score videos the model trains on. Rebuild the dataset with each video in one split"
        )


def dataset_fingerprint(recipe: TrainingRecipe) -> str | None:
    """The SHA-256 of the files a run reads from its local dataset folder (each data file of the recipe's
    configs and splits: its path inside the folder and its bytes), or None for a Hub dataset id.

    A copied or moved folder keeps it; other rows or features change it (the Parquet footers alone do not
    tell two feature sets of the same shape apart). Reads every such file once (about 1.4 GB/s).
    """
    root = Path(recipe.dataset_path).resolve()
    if not root.is_dir():
        return None
    digest = hashlib.sha256()
    for config in (recipe.dataset_config, f"{recipe.dataset_config}-features"):
        data_files = datasets.load_dataset_builder(str(root), config).config.data_files
        for split in (recipe.train_split, recipe.eval_split):
            for path in sorted(data_files.get(split, [])) if split else []:
                with open(path, "rb") as file:
                    content = hashlib.file_digest(file, "sha256").hexdigest()
                digest.update(f"{config}\0{split}\0{os.path.relpath(path, root)}\0{content}\n".encode())
    return digest.hexdigest()


def dataset_properties(dataset: MomentRetrievalDataset) -> dict[str, Any]:
    """The model-config values a dataset fixes: feature widths and the clip length (seconds)."""
    clip_lengths = dataset.queries.with_format(None).unique("clip_length")
    if len(clip_lengths) != 1:
        raise RunInputError(
            f"the dataset mixes clip lengths {sorted(clip_lengths)}; one model needs one clip length"
        )
    return {
        "video_feature_dim": dataset.videos.features["video_features"].shape[1],
        "text_feature_dim": dataset.queries.features["text_features"].shape[1],
        "clip_length": float(clip_lengths[0]),
    }


def check_matches_data(
    values: Mapping[str, Any], properties: Mapping[str, Any], what: str, advice: str = ""
) -> None:
    """Raise :class:`RunInputError` when ``values`` (config keys) contradict the dataset's ``properties``;
    ``advice`` ends the message (what to do)."""
    conflicts = [
        f"{key}={values[key]} (dataset: {value})"
        for key, value in properties.items()
        if key in values and not math.isclose(float(values[key]), float(value))
    ]
    if conflicts:
        raise RunInputError(f"{what} does not fit the dataset: {', '.join(conflicts)}{advice}")


def build_collator(config, seed: int, max_query_tokens: int) -> MomentRetrievalCollator:
    """The collator for a model config (its clip and ground-truth-window caps) and the recipe's query cap."""
    return MomentRetrievalCollator(
        max_clips=config.max_num_clips,
        max_text_tokens=max_query_tokens,
        max_windows=config.max_gt_windows,
        num_margin_pairs=config.num_saliency_pairs,
        seed=seed,
    )
