"""Build a ``datasets`` repo folder (Parquet shards + README card) from annotations and features.

Layout written for a dataset ``name`` (the ``push_to_hub`` naming, so the folder can be uploaded as is)::

    <output_dir>/README.md                                   YAML configs + dataset_info, then the card
    <output_dir>/<name>/<split>-00000-of-0000K.parquet       query rows: annotation columns + text_features
    <output_dir>/<name>-features/<split>-00000-of-0000K.parquet   video rows: vid + video_features

so that ``load_dataset(output_dir, name, split=...)`` gives the query rows and
``load_dataset(output_dir, f"{name}-features", split=...)`` the videos of that split;
:func:`sgdetr_hf.data.load_moment_retrieval` joins them by ``vid``. Several datasets can share one
folder: each build rewrites only its own configs in the card.

Why a per-video features config: measured with ``scripts/benchmark_data.py layout`` on 10k synthetic
videos (L=75, d=512, 1.8 queries per video, 18k queries, random float16 features), each layout in a fresh
process, on a shared 2-core CPU under heavy load from other jobs:

==========================  =============  ===========  =======  ==========  =============  ========
layout                      Parquet (MiB)  cache (MiB)  write s  first load  batches/s, 32  peak RSS
==========================  =============  ===========  =======  ==========  =============  ========
video features in each row  1883           1895         125      33 s        20.4           4161 MiB
per-video config, joined    1297           1307         68       16 s        30.2           3361 MiB
==========================  =============  ===========  =======  ==========  =============  ========

The join stores each video once (-31 % disk and cache, -19 % RSS, faster writes); fetch speed was equal
within the load noise (two earlier runs: 80 vs 37 and 32 vs 15 batches/s in favour of rows, this one 20
vs 30 for the join). The real ratios decide it: TACoS has ~130 queries per video of up to 702 clips (rows
would store its features ~130 times), Charades-STA 2.3; only QVHighlights is ~1 (1.02 per ``vid``).

Features source: a :class:`FeatureFolder` written by the feature extraction, a published ``.npz``
release (:class:`sgdetr_hf.data.npz_features.NpzFeatures`), or :class:`ArrayFeatures` (in-memory arrays).
Feature folder format::

    <root>/videos/<vid>.safetensors     tensor "video_features": (L, d_v), any float dtype
    <root>/queries/<qid>.safetensors    tensor "text_features":  (N, d_t), any float dtype

Features are stored as float16: a value that is NaN or infinite, or finite but beyond float16's range
(|x| > 65504, which the cast would turn into inf), is an error naming the vid / qid and its file. Each video's
feature length L must match the clip count of its annotated duration, ``num_clips(duration, clip_length)``,
within :data:`~sgdetr_hf.data.schema.MAX_CLIP_MISMATCH` (2) clips (``max_clip_mismatch``; not checked for
rows with per-clip ``label`` lists, TVSum and YouTube Highlights, whose ``duration`` is not their clip count
in seconds). Every shard is written to a temporary file in its folder and moved into
place with ``os.replace``, so a reader never sees half a shard. Resuming: a source that can fingerprint
its files (``FeatureFolder``, ``NpzFeatures``: path, size and mtime of every file, plus its options) has
that digest, with the shard's annotation rows, stored in each shard's Parquet metadata; a rerun of an
interrupted build keeps the shards whose digest still matches and writes only the rest.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file
from tqdm.auto import tqdm

from .._deprecation import moved_names
from ..files import atomic_output, atomic_write_text, strict_json
from .schema import (
    ANNOTATION_COLUMNS,
    MAX_CLIP_MISMATCH,
    annotation_features,
    num_clips,
    video_features_features,
)

logger = logging.getLogger(__name__)

VIDEO_KEY = "video_features"
TEXT_KEY = "text_features"
_CONFIG_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_SPLIT_NAME = re.compile(r"^\w+$")


class FeatureSource(Protocol):
    """Where the builder reads features: shapes first (cheap, for validation), then the arrays.

    Optional extras the builder uses when a source has them: ``describe_missing(keys) -> list[str]`` (the
    absent files, named in the missing-features error), ``feature_files(kind, key) -> list[str]`` (the files
    of one video or query, named in the errors about its values), ``fingerprint(kind, keys) -> str | None``
    ("video" or "text": a digest of what those features are made of, so that a rerun skips finished shards;
    None: not known, the shard is rewritten)
    and ``report() -> dict`` (copied into :attr:`BuildReport.feature_source`).
    """

    def video_shape(self, vid: str) -> tuple[int, ...] | None: ...
    def text_shape(self, qid: str) -> tuple[int, ...] | None: ...
    def video(self, vid: str) -> np.ndarray: ...
    def text(self, qid: str) -> np.ndarray: ...


class FeatureFolder:
    """Per-video and per-query safetensors files (format in the module docstring).

    Shapes come from the safetensors header, so validating 10k videos reads no tensor data.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"feature folder {self.root} does not exist")

    def video_path(self, vid: str) -> Path:
        return self.root / "videos" / f"{vid}.safetensors"

    def text_path(self, qid: str) -> Path:
        return self.root / "queries" / f"{qid}.safetensors"

    @staticmethod
    def _shape(path: Path, key: str) -> tuple[int, ...] | None:
        if not path.is_file():
            return None
        try:
            with safe_open(path, framework="np") as file:
                keys = list(file.keys())
                shape = tuple(file.get_slice(key).get_shape()) if key in keys else None
        except Exception as error:  # safetensors raises its own error types for damaged headers
            raise ValueError(f"{path} is not a readable safetensors file ({error}); re-extract it") from None
        if shape is None:
            raise ValueError(f"{path} has no tensor {key!r} (it holds {sorted(keys)})")
        return shape

    @staticmethod
    def _load(path: Path, key: str) -> np.ndarray:
        try:
            array = load_file(path)[key]
        except (SafetensorError, OSError) as error:  # a file damaged or replaced since its header was read
            raise ValueError(f"{path} is not a readable safetensors file ({error}); re-extract it") from None
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise ValueError(
                f"{path}: tensor {key!r} holds {bad} NaN or infinite values of {array.size}; re-extract it"
            )
        return array

    def video_shape(self, vid: str) -> tuple[int, ...] | None:
        return self._shape(self.video_path(vid), VIDEO_KEY)

    def text_shape(self, qid: str) -> tuple[int, ...] | None:
        return self._shape(self.text_path(qid), TEXT_KEY)

    def video(self, vid: str) -> np.ndarray:
        return self._load(self.video_path(vid), VIDEO_KEY)

    def text(self, qid: str) -> np.ndarray:
        return self._load(self.text_path(qid), TEXT_KEY)

    def feature_files(self, kind: str, key: str) -> list[str]:
        return [str(self.video_path(key) if kind == "video" else self.text_path(key))]

    def fingerprint(self, kind: str, keys: Sequence[str]) -> str:
        return file_fingerprint(self.video_path(k) if kind == "video" else self.text_path(k) for k in keys)


def file_fingerprint(paths, options: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of ``options`` (JSON) and of every file's path, size and modification time."""
    digest = hashlib.sha256(strict_json(options or {}, "the feature options", sort_keys=True).encode())
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class ArrayFeatures:
    """In-memory features: ``videos`` maps vid -> (L, d_v) array, ``texts`` maps qid -> (N, d_t) array.

    Any mapping works (a dict, or a lazy mapping over another store); build one from an iterable of
    ``(id, array)`` pairs with ``dict(pairs)``.
    """

    def __init__(self, videos: Mapping[str, Any], texts: Mapping[str, Any]):
        self.videos = videos
        self.texts = texts

    def video_shape(self, vid: str) -> tuple[int, ...] | None:
        return np.shape(self.videos[vid]) if vid in self.videos else None

    def text_shape(self, qid: str) -> tuple[int, ...] | None:
        return np.shape(self.texts[qid]) if qid in self.texts else None

    def video(self, vid: str) -> np.ndarray:
        return np.asarray(self.videos[vid])

    def text(self, qid: str) -> np.ndarray:
        return np.asarray(self.texts[qid])


@dataclass
class BuildReport:
    """What a build wrote: per-split query and video counts, what was skipped, dims, files, time."""

    name: str
    queries: dict[str, int] = field(default_factory=dict)
    videos: dict[str, int] = field(default_factory=dict)
    missing_videos: list[str] = field(default_factory=list)
    missing_queries: list[str] = field(default_factory=list)
    video_dim: int = 0
    text_dim: int = 0
    files: list[str] = field(default_factory=list)
    reused_files: list[str] = field(default_factory=list)  # shards of an interrupted build kept as they were
    feature_source: dict[str, Any] = field(default_factory=dict)  # the source's report(), e.g. truncations
    seconds: float = 0.0


def _feature_dim(shapes: Mapping[str, tuple[int, ...]], what: str) -> int:
    """The common width d of (rows, d) feature shapes; ValueError naming the odd ones out."""
    bad = [key for key, shape in shapes.items() if len(shape) != 2 or shape[0] < 1 or shape[1] < 1]
    if bad:
        raise ValueError(
            f"{what} must be non-empty (rows, d) matrices; wrong shape for {bad[:10]} ({len(bad)} in all)"
        )
    widths: dict[int, list[str]] = {}
    for key, shape in shapes.items():
        widths.setdefault(shape[1], []).append(key)
    if len(widths) > 1:
        detail = "; ".join(f"d={d}: {len(keys)} e.g. {keys[:3]}" for d, keys in sorted(widths.items()))
        raise ValueError(f"inconsistent {what} dims ({detail}); all features of a dataset must share one d")
    return next(iter(widths))


def _float16(matrix: np.ndarray) -> np.ndarray:
    return np.asarray(matrix, dtype=np.float16)


FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def checked_float16(matrix: Any, what: str) -> np.ndarray:
    """``matrix`` as float16, refusing NaN / inf in it and finite values that float16 turns into inf.

    Args:
        what: names the features in the error, e.g. ``"video 'abc' (feats/videos/abc.safetensors)"``.
    """
    values = np.asarray(matrix)
    with np.errstate(over="ignore", invalid="ignore"):
        half = values.astype(np.float16)
    finite = np.isfinite(half)
    if finite.all():
        return half
    source_bad = ~np.isfinite(values)
    if source_bad.any():
        raise ValueError(
            f"{what}: {int(source_bad.sum())} of {values.size} feature values are NaN or infinite (first in "
            f"row {int(np.argwhere(source_bad)[0][0])}); re-extract these features"
        )
    row = int(np.argwhere(~finite)[0][0])
    raise ValueError(
        f"{what}: {int((~finite).sum())} of {values.size} feature values are beyond float16's range "
        f"(|x| up to {float(np.abs(values).max()):.4g} > {FLOAT16_MAX:g}; first in row {row}), and the dataset "
        "stores float16; normalise or rescale the features (a .npz release: leave --normalize-video / "
        "--normalize-text on)"
    )


def _describe(features: Any, kind: str, key: str) -> str:
    """``"video 'abc'"`` plus the source's files for it, when it can name them."""
    files = getattr(features, "feature_files", None)
    names = files(kind, key) if files is not None else []
    return f"{'video' if kind == 'video' else 'query'} {key!r}" + (f" ({', '.join(names)})" if names else "")


def _clip_count_mismatches(
    kept: Mapping[str, Sequence[Mapping[str, Any]]],
    video_shapes: Mapping[str, tuple[int, ...]],
    max_clip_mismatch: int,
) -> list[str]:
    """Videos whose feature length L is more than ``max_clip_mismatch`` clips from what a row's duration implies.

    Rows with a per-clip ``label`` (TVSum, YouTube Highlights) are not compared: their ``duration`` is not the
    seconds of their clips (the real TVSum files give the clip count, YouTube Highlights ~2-5x its labels).
    """
    problems: list[str] = []
    checked: set[tuple[str, float, float]] = set()
    for split, rows in kept.items():
        for row in rows:
            vid, qid = str(row["vid"]), str(row["qid"])
            try:
                duration, clip_length = float(row["duration"]), float(row["clip_length"])
            except (TypeError, ValueError):
                duration = clip_length = math.nan
            if not (
                math.isfinite(duration) and duration > 0 and math.isfinite(clip_length) and clip_length > 0
            ):
                raise ValueError(
                    f"split {split!r} query {qid!r} (video {vid!r}): duration {row['duration']!r} and "
                    f"clip_length {row['clip_length']!r} must be finite numbers of seconds > 0"
                )
            if (row["label"] is not None and len(row["label"])) or (vid, duration, clip_length) in checked:
                continue
            checked.add((vid, duration, clip_length))
            length, expected = video_shapes[vid][0], num_clips(duration, clip_length)
            if abs(length - expected) > max_clip_mismatch:
                problems.append(
                    f"video {vid!r} has L={length} feature clips, but query {qid!r} says duration {duration:g} s, "
                    f"i.e. {expected} clips of {clip_length:g} s"
                )
    return problems


def _matrix_column(matrices: Sequence[np.ndarray], width: int) -> pa.Array:
    """A list<fixed_size_list<halffloat>[width]> Arrow array of ragged (rows, width) matrices, built in one go."""
    flat = np.concatenate([_float16(m) for m in matrices]) if matrices else np.zeros((0, width))
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in matrices])]).astype(np.int32)
    rows = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), type=pa.float16()), width)
    return pa.ListArray.from_arrays(pa.array(offsets), rows)


def write_parquet_shard(
    path: Path,
    columns: Mapping[str, Any],
    features: datasets.Features,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write one Parquet shard atomically (temporary file in the same folder, then ``os.replace``).

    ``columns`` holds lists of Python values, and lists of numpy matrices for ``Array2D`` columns. The
    ``datasets`` features are embedded in the schema metadata, as ``Dataset.to_parquet`` does, with the
    extra ``metadata`` keys.
    """
    schema = features.arrow_schema
    if metadata:
        schema = schema.with_metadata(
            {**(schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}}
        )
    arrays = [
        _matrix_column(columns[name], feature.shape[1])
        if isinstance(feature, datasets.Array2D)
        else pa.array(columns[name], type=schema.field(name).type)
        for name, feature in features.items()
    ]
    table = pa.Table.from_arrays(arrays, names=list(features)).cast(schema)
    # Dictionary encoding and min/max statistics of float16 feature columns cost ~8x the CPU of the
    # whole write and save nothing (measured); the small annotation columns keep both.
    small_columns = [name for name, feature in features.items() if not isinstance(feature, datasets.Array2D)]
    with atomic_output(path) as temporary:
        pq.write_table(table, temporary, use_dictionary=small_columns, write_statistics=small_columns)


def _shard_ranges(sizes: np.ndarray, max_shard_bytes: int) -> list[np.ndarray]:
    """Split row indices into ceil(total / max_shard_bytes) contiguous shards of similar byte size."""
    num_shards = max(1, math.ceil(int(sizes.sum()) / max_shard_bytes))
    num_shards = min(num_shards, len(sizes))
    # side="right": a shard ends after the row that reaches its share (equal sizes: no empty first shard).
    boundaries = np.searchsorted(
        np.cumsum(sizes), np.arange(1, num_shards) * sizes.sum() / num_shards, side="right"
    )
    return [part for part in np.split(np.arange(len(sizes)), boundaries) if len(part)]


SHARD_DIGEST_KEY = "sgdetr_shard_digest"


def _shard_digest(path: Path) -> str | None:
    """The digest a finished shard was written with, or None (absent, unreadable, or written without one)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    digest = metadata.get(SHARD_DIGEST_KEY.encode())
    return digest.decode() if digest else None


def _write_config(
    output_dir: Path,
    config: str,
    split: str,
    parts: list[np.ndarray],
    columns_for,
    features: datasets.Features,
    digest_for,
    progress: tqdm,
) -> tuple[list[str], list[str]]:
    """Write the shards of one (config, split), keeping those already written with the same digest.

    ``digest_for(part)`` is the shard's digest, or None when the source cannot fingerprint its files (then
    every shard is rewritten). Returns (all shard paths, the reused ones), relative to ``output_dir``.
    """
    written, reused = [], []
    for index, part in enumerate(parts):
        relative = f"{config}/{split}-{index:05d}-of-{len(parts):05d}.parquet"
        written.append(relative)
        digest = digest_for(part)
        if digest is not None and _shard_digest(output_dir / relative) == digest:
            reused.append(relative)
            progress.update(len(part))
            continue
        metadata = {SHARD_DIGEST_KEY: digest} if digest is not None else None
        write_parquet_shard(output_dir / relative, columns_for(part), features, metadata)
    return written, reused


def _counting(items: Sequence[Any], progress: tqdm):
    """``items``, advancing ``progress`` by one after each (the feature reads are the slow part of a build)."""
    for item in items:
        yield item
        progress.update(1)


def _update_card(
    output_dir: Path,
    name: str,
    splits: Mapping[str, int],
    video_splits: Mapping[str, int],
    query_features: datasets.Features,
    video_features: datasets.Features,
    card_body: str | None,
    card_metadata: Mapping[str, Any] | None,
) -> None:
    """Merge this dataset's two configs (files, features, split sizes) into ``output_dir/README.md``."""
    readme = output_dir / "README.md"
    card = DatasetCard(readme.read_text(encoding="utf-8")) if readme.is_file() else None
    card_data = DatasetCardData(**{**(card.data.to_dict() if card else {}), **(card_metadata or {})})
    configs, infos = MetadataConfigs(), DatasetInfosDict()
    for config, features, counts in (
        (name, query_features, splits),
        (f"{name}-features", video_features, video_splits),
    ):
        configs[config] = {
            "data_files": [{"split": split, "path": f"{config}/{split}-*"} for split in counts]
        }
        split_dict = datasets.SplitDict()
        for split, count in counts.items():
            split_dict.add(datasets.SplitInfo(name=split, num_examples=count))
        infos[config] = datasets.DatasetInfo(features=features, splits=split_dict)
    # Both merge into the card's existing entries, keeping the other datasets of the folder.
    configs.to_dataset_card_data(card_data)
    infos.to_dataset_card_data(card_data)
    body = card_body if card_body is not None else (card.text if card else "")
    if not body.strip():
        body = f"\n# {name}\n\nBuilt with `sgdetr_hf.data.build_dataset`.\n"
    atomic_write_text(readme, f"---\n{card_data.to_yaml()}\n---\n{body.lstrip(chr(10)).rstrip()}\n")


def build_dataset(
    output_dir: str | Path,
    name: str,
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    features: FeatureSource,
    *,
    skip_missing: bool = False,
    max_shard_bytes: int = 512 * 2**20,
    card_body: str | None = None,
    card_metadata: Mapping[str, Any] | None = None,
    max_clip_mismatch: int = MAX_CLIP_MISMATCH,
) -> BuildReport:
    """Join annotation rows with their features and write the dataset ``name`` into ``output_dir``.

    Args:
        output_dir: the dataset repo folder (created if needed; other datasets in it are kept).
        name: config name, e.g. ``"qvhighlights"`` (lowercase letters, digits, ``-`` and ``_``).
        splits: split name -> schema rows (:func:`sgdetr_hf.data.read_annotations` output).
        features: where the (L, d_v) video and (N, d_t) text features come from.
        skip_missing: drop (and report) the queries whose video or text features are missing, instead
            of stopping with the list.
        max_shard_bytes: target size of one Parquet shard (features dominate: L * d * 2 bytes a video).
        card_body: the card's Markdown below the YAML; default: keep the existing card's body.
        card_metadata: extra YAML keys (``license``, ``tags``, ``pretty_name``...).
        max_clip_mismatch: how many clips a video's feature length may differ from the clip count of its
            rows' duration (module docstring); larger differences are an error naming the videos.

    Returns:
        a :class:`BuildReport`.

    Raises:
        ValueError: bad arguments, missing features (unless ``skip_missing``), features that are not
            (rows, d) matrices, dims that differ between videos or between queries, a feature length
            that does not match its duration, or feature values that are NaN, inf or beyond float16.
    """
    start = time.perf_counter()
    output_dir = Path(output_dir)
    if not _CONFIG_NAME.match(name) or name.endswith("-features"):
        raise ValueError(
            f"dataset name {name!r} must match {_CONFIG_NAME.pattern} and not end with '-features'"
        )
    if not splits or any(not _SPLIT_NAME.match(split) for split in splits):
        raise ValueError(f"splits must be a non-empty mapping of word-character names, got {list(splits)}")
    if isinstance(max_clip_mismatch, bool) or not isinstance(max_clip_mismatch, int) or max_clip_mismatch < 0:
        raise ValueError(f"max_clip_mismatch must be an integer >= 0 clips, got {max_clip_mismatch!r}")
    report = BuildReport(name=name)

    # 1. Inventory: every feature's shape, read without loading any tensor.
    video_shapes: dict[str, tuple[int, ...]] = {}
    text_shapes: dict[str, tuple[int, ...]] = {}
    kept: dict[str, list[Mapping[str, Any]]] = {}
    queries_without_video = 0
    with tqdm(total=sum(map(len, splits.values())), desc=f"{name}: checking features", unit="query") as bar:
        for split, rows in splits.items():
            kept[split] = []
            for index, row in enumerate(_counting(rows, bar)):
                missing_columns = [c for c in ANNOTATION_COLUMNS if c not in row]
                if missing_columns:
                    raise ValueError(f"split {split!r} row {index} lacks columns {missing_columns}")
                vid, qid = str(row["vid"]), str(row["qid"])
                if vid not in video_shapes:
                    shape = features.video_shape(vid)
                    if shape is None:
                        report.missing_videos.append(vid)
                    video_shapes[vid] = shape
                queries_without_video += video_shapes[vid] is None
                text_shapes[qid] = features.text_shape(qid)
                if text_shapes[qid] is None:
                    report.missing_queries.append(qid)
                if video_shapes[vid] is not None and text_shapes[qid] is not None:
                    kept[split].append(row)
    if report.missing_videos or report.missing_queries:
        summary = (
            f"missing features for {len(report.missing_videos)} videos {report.missing_videos[:20]} and "
            f"{len(report.missing_queries)} queries {report.missing_queries[:20]} ({queries_without_video} "
            "queries have no video features)"
        )
        describe = getattr(features, "describe_missing", None)
        if describe is not None:
            files = describe(report.missing_videos[:3] + report.missing_queries[:3])
            summary += f"; absent files, e.g. {files[:6]}"
        if not skip_missing:
            raise ValueError(
                f"{summary}; extract them, or pass skip_missing=True (--skip-missing) to leave them out"
            )
        logger.warning("%s: skipping the queries that need them", summary)
    video_shapes = {k: v for k, v in video_shapes.items() if v is not None}
    text_shapes = {k: v for k, v in text_shapes.items() if v is not None}
    if not any(kept.values()):
        raise ValueError("no query has both its video and its text features; nothing to build")
    report.video_dim = _feature_dim(video_shapes, "video features")
    report.text_dim = _feature_dim(text_shapes, "text features")
    mismatches = _clip_count_mismatches(kept, video_shapes, max_clip_mismatch)
    if mismatches:
        raise ValueError(
            f"the video features of {len(mismatches)} videos do not match their annotated durations (more than "
            f"{max_clip_mismatch} clips apart): {'; '.join(mismatches[:5])}. Are they another video's features, "
            "or extracted at another clip length (--clip-length)? Re-extract them or fix the durations; a "
            "feature set known to differ more can pass max_clip_mismatch (--max-clip-mismatch)"
        )
    if hasattr(features, "report"):
        report.feature_source = features.report()

    # 2. Shards, split by split; a shard whose digest matches the one on disk is kept (resume).
    query_features = annotation_features(report.text_dim)
    video_features = video_features_features(report.video_dim)
    fingerprint = getattr(features, "fingerprint", None)

    def digest_for(kind: str, keys: list[str], schema: datasets.Features, extra: Any = None):
        if fingerprint is None or (made_of := fingerprint(kind, keys)) is None:
            return None
        content = strict_json(
            [schema.to_dict(), extra], "the shard's annotations", sort_keys=True, default=str
        )
        return hashlib.sha256((made_of + content).encode()).hexdigest()

    for split, rows in kept.items():
        vids = list(dict.fromkeys(str(row["vid"]) for row in rows))
        report.queries[split], report.videos[split] = len(rows), len(vids)
        bar = tqdm(total=len(rows) + len(vids), desc=f"{name}/{split}: writing", unit="row")

        def query_columns(part: np.ndarray, rows=rows, bar=bar) -> dict[str, list]:
            columns = {c: [rows[i][c] for i in part] for c in ANNOTATION_COLUMNS}
            columns["qid"] = [str(q) for q in columns["qid"]]
            # stored as float16: converted one by one, so a shard's worth in memory is float16 too
            columns[TEXT_KEY] = [
                checked_float16(features.text(qid), _describe(features, "text", qid))
                for qid in _counting(columns["qid"], bar)
            ]
            return columns

        def video_columns(part: np.ndarray, vids=vids, bar=bar) -> dict[str, list]:
            ids = [vids[i] for i in part]
            matrices = [
                checked_float16(features.video(vid), _describe(features, "video", vid))
                for vid in _counting(ids, bar)
            ]
            return {"vid": ids, VIDEO_KEY: matrices}

        def query_digest(part: np.ndarray, rows=rows) -> str | None:
            annotations = [{c: rows[i][c] for c in ANNOTATION_COLUMNS} for i in part]
            return digest_for("text", [str(a["qid"]) for a in annotations], query_features, annotations)

        def video_digest(part: np.ndarray, vids=vids) -> str | None:
            return digest_for("video", [vids[i] for i in part], video_features)

        text_sizes = np.array([math.prod(text_shapes[str(row["qid"])]) * 2 + 512 for row in rows])
        video_sizes = np.array([math.prod(video_shapes[vid]) * 2 for vid in vids])
        with bar:
            for config, sizes, columns_for, schema, digest in (
                (name, text_sizes, query_columns, query_features, query_digest),
                (f"{name}-features", video_sizes, video_columns, video_features, video_digest),
            ):
                parts = _shard_ranges(sizes, max_shard_bytes)
                written, reused = _write_config(
                    output_dir, config, split, parts, columns_for, schema, digest, bar
                )
                report.files += written
                report.reused_files += reused
        logger.info("%s/%s: %d queries, %d videos", name, split, len(rows), len(vids))
    if report.reused_files:
        logger.info("kept %d shards of an earlier build with the same inputs", len(report.reused_files))

    # Shards of an older build of this dataset (other shard counts, dropped splits) would be loaded too.
    for config in (name, f"{name}-features"):
        for shard in (output_dir / config).glob("*.parquet"):
            if f"{config}/{shard.name}" not in report.files:
                shard.unlink()
    _update_card(
        output_dir,
        name,
        report.queries,
        report.videos,
        query_features,
        video_features,
        card_body,
        card_metadata,
    )
    report.seconds = time.perf_counter() - start
    return report


__getattr__ = moved_names(globals(), {"write_text_atomic": "sgdetr_hf.files:atomic_write_text"})
