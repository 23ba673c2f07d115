"""Reading a built dataset back: query rows joined with their video's features by ``vid``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch

from .builder import VIDEO_KEY


class MomentRetrievalDataset(torch.utils.data.Dataset):
    """Map-style dataset of schema rows with ``video_features`` (L, d_v) and ``text_features`` (N, d_t).

    Joins the query rows (config ``name``) with the video rows (config ``name-features``) by ``vid``.
    Both stay memory-mapped Arrow tables; only the requested rows are read. ``__getitems__`` fetches a
    whole DataLoader batch with two Arrow takes and turns the feature columns into numpy float16 arrays
    straight from the Arrow buffers (4x faster than ``datasets``' numpy formatter, measured).

    Args:
        queries: the query rows (with ``text_features``).
        videos: the video rows (``vid``, ``video_features``); every query's ``vid`` must be present.
    """

    def __init__(self, queries: datasets.Dataset, videos: datasets.Dataset):
        self.queries = queries
        self.videos = videos
        # Arrow-formatted views for __getitems__; the public tables keep the caller's format.
        self._query_rows = queries.with_format("arrow")
        self._video_rows = videos.with_format("arrow")
        video_ids = videos.with_format(None)["vid"]
        self.video_row = {vid: row for row, vid in enumerate(video_ids)}
        if len(self.video_row) != len(video_ids):
            raise ValueError("the features config lists some vid more than once; rebuild the dataset")
        missing = sorted(set(queries.with_format(None)["vid"]) - self.video_row.keys())
        if missing:
            raise ValueError(
                f"{len(missing)} queries' videos have no features, e.g. {missing[:10]}; rebuild the dataset"
            )

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        rows = rows_from_arrow(self._query_rows[indices])
        videos = _matrices(self._video_rows[[self.video_row[row["vid"]] for row in rows]][VIDEO_KEY])
        for row, video in zip(rows, videos):
            row[VIDEO_KEY] = video
        return rows


def _matrices(column: pa.ChunkedArray) -> list[np.ndarray]:
    """The (rows, d) float16 matrices of an ``Array2D`` column, split from one flat buffer (no per-row copy)."""
    rows = column.combine_chunks().storage  # list<list<halffloat>>: matrix -> rows -> values
    offsets = rows.offsets.to_numpy()
    vectors = rows.values  # every row vector of the underlying buffer, unsliced
    flat = vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(vectors), -1)
    return np.split(flat[offsets[0] : offsets[-1]], offsets[1:-1] - offsets[0])


def rows_from_arrow(table: pa.Table) -> list[dict[str, Any]]:
    """Arrow rows -> dicts of Python values, with numpy float16 matrices for the ``Array2D`` columns."""
    columns = {
        name: _matrices(column) if isinstance(column.type, pa.ExtensionType) else column.to_pylist()
        for name, column in zip(table.column_names, table.columns)
    }
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def load_moment_retrieval(
    path: str | Path, name: str, split: str, **load_kwargs: Any
) -> MomentRetrievalDataset:
    """``load_dataset`` both configs of ``name`` from a built folder (or Hub repo) and join them.

    Args:
        path: the dataset folder (absolute, or relative with a ``/``) or a Hub repo id.
        name: the dataset's config name, e.g. ``"qvhighlights"``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        load_kwargs: passed to both ``datasets.load_dataset`` calls (e.g. ``cache_dir``).
    """
    path = str(Path(path).resolve()) if Path(path).exists() else str(path)
    queries = datasets.load_dataset(path, name, split=split, **load_kwargs)
    videos = datasets.load_dataset(path, f"{name}-features", split=split, **load_kwargs)
    return MomentRetrievalDataset(queries, videos)
