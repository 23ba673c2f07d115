"""Feature releases in the per-file ``.npz`` layout that Moment-DETR, QD-DETR, CG-DETR, UniVTG and lighthouse publish.

A release folder holds one sub-folder per feature type, one ``.npz`` file per video or query::

    <root>/clip_features/<vid>.npz         "features" (L, 512)   float16 (HERO extractor, np.savez)
    <root>/slowfast_features/<vid>.npz     "features" (L', 2304) float16, L' within a clip or two of L
    <root>/clip_text_features/qid<qid>.npz "last_hidden_state" (N, 512), "pooler_output" (512,)

(QVHighlights' ``moment_detr_features``; lighthouse names the folders ``clip``, ``slowfast``, ``clip_text``
and its TACoS, TVSum and YouTube Highlights query files ``<qid>.npz``.) :class:`NpzFeatures` serves such a
folder to :func:`sgdetr_hf.data.build_dataset` as the reference loaders (``start_end_dataset.py`` of
Moment-DETR and CG-DETR, lighthouse's ``training/dataset.py``) turn it into model inputs:

- each video feature type is L2-normalised on its own, ``x / (||x|| + 1e-5)`` per clip, then the types are
  cut to the shortest one's length and concatenated along the feature axis, in the order given;
- query tokens are L2-normalised the same way (not for TVSum and YouTube Highlights, whose text the
  reference loaders use as stored), optionally with the pooled sentence vector as an extra first token;
- optionally the two temporal-endpoint columns ``[i / L, (i + 1) / L]`` (TEF) are appended. SG-DETR appends
  them itself (``SGDetrConfig.use_tef``), so they are only written into the dataset for other models.

Shapes are read from the ``.npy`` headers inside the archives, so validating 10k videos reads no feature data.
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_output
from .builder import file_fingerprint
from .schema import MAX_CLIP_MISMATCH

logger = logging.getLogger(__name__)

#: Epsilon of the reference loaders' ``l2_normalize_np_array``.
L2_EPSILON = 1e-5
POOLED_TOKEN_CHOICES = ("drop", "prepend", "only")


@dataclasses.dataclass(frozen=True)
class NpzLayout:
    """File naming, array keys and normalisation of one published release (the reference loaders' defaults)."""

    video_key: str = "features"
    text_key: str = "last_hidden_state"
    pooled_key: str = "pooler_output"
    query_file: str = "qid{qid}.npz"  # formatted with the annotation's qid
    normalize_video: bool = True
    normalize_text: bool = True


#: Per dataset (the builder's dataset names): how the reference loaders read its features.
PUBLISHED_LAYOUTS: dict[str, NpzLayout] = {
    "qvhighlights": NpzLayout(),
    "charades-sta": NpzLayout(),
    "intervid-mr": NpzLayout(),
    "tacos": NpzLayout(query_file="{qid}.npz"),
    # lighthouse and CG-DETR return these query features without normalising them.
    "tvsum": NpzLayout(text_key="token", query_file="{qid}.npz", normalize_text=False),
    "youtube-highlights": NpzLayout(query_file="{qid}.npz", normalize_text=False),
}


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm plus 1e-5, in float32 (the reference loaders' formula)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / (np.linalg.norm(matrix, axis=-1, keepdims=True) + L2_EPSILON)


def temporal_endpoint_features(num_clips: int) -> np.ndarray:
    """(L, 2) float32 ``[i / L, (i + 1) / L]``: where each clip starts and ends in its video (Moment-DETR's TEF)."""
    start = np.arange(num_clips, dtype=np.float32) / num_clips
    return np.stack([start, start + np.float32(1.0 / num_clips)], axis=1)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write one feature file of the layout (``np.savez``, uncompressed, as the releases are), atomically."""
    with atomic_output(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, **arrays)


def _npy_header(archive: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    with archive.open(member) as file:
        version = np.lib.format.read_magic(file)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(file)
    return tuple(shape), dtype


class NpzFeatures:
    """A published ``.npz`` feature release as a :class:`~sgdetr_hf.data.builder.FeatureSource`.

    Args:
        root: the release folder.
        video_types: sub-folders of ``root`` whose ``<vid>.npz`` files are concatenated, in this order
            (e.g. ``["clip_features", "slowfast_features"]``).
        text_type: the sub-folder of the query files (e.g. ``"clip_text_features"``).
        layout: keys, query file name and normalisation defaults (:data:`PUBLISHED_LAYOUTS`).
        tef: append the two TEF columns to every video (d_v + 2). Off by default: SG-DETR adds them itself.
        pooled_token: ``"drop"`` (tokens only, the reference default), ``"prepend"`` (the pooled vector as
            an extra first token: first, so that the collator's token cap never cuts it) or ``"only"``
            (the pooled vector as a single token).
        max_clip_mismatch: how many clips the feature types of one video may differ in length (they are
            cut to the shortest); more means types at different clip lengths, an error naming the files.
            The builder holds the cut length to the same rule against the annotated duration.

    Raises ``ValueError`` naming the file for an unreadable archive, a missing key, a shape that is not a
    matrix or whose width differs from the other files of its folder, a non-float array, or NaN / inf;
    and naming the video's files for feature types more than ``max_clip_mismatch`` clips apart.
    """

    def __init__(
        self,
        root: str | Path,
        video_types: Sequence[str],
        text_type: str,
        layout: NpzLayout = NpzLayout(),
        *,
        tef: bool = False,
        pooled_token: str = "drop",
        max_clip_mismatch: int = MAX_CLIP_MISMATCH,
    ):
        self.root = Path(root)
        self.video_types = list(video_types)
        self.text_type = text_type
        self.layout = layout
        self.tef = tef
        self.pooled_token = pooled_token
        self.max_clip_mismatch = max_clip_mismatch
        if (
            isinstance(max_clip_mismatch, bool)
            or not isinstance(max_clip_mismatch, int)
            or max_clip_mismatch < 0
        ):
            raise ValueError(f"max_clip_mismatch must be an integer >= 0 clips, got {max_clip_mismatch!r}")
        if pooled_token not in POOLED_TOKEN_CHOICES:
            raise ValueError(f"pooled_token must be one of {POOLED_TOKEN_CHOICES}, got {pooled_token!r}")
        if not self.video_types or len(set(self.video_types)) != len(self.video_types):
            raise ValueError(f"video_types must name one or more distinct folders, got {self.video_types}")
        try:
            valid_pattern = layout.query_file.format(qid="0") != layout.query_file.format(qid="1")
        except (KeyError, IndexError, ValueError):
            valid_pattern = False
        if not valid_pattern:
            raise ValueError(
                f"the query file pattern must contain {{qid}} and no other field, got {layout.query_file!r}"
            )
        for folder in (*self.video_types, text_type):
            if not (self.root / folder).is_dir():
                present = (
                    sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
                )
                raise ValueError(
                    f"feature folder {self.root / folder} does not exist ({self.root} holds {present})"
                )
        self._widths: dict[str, tuple[int, Path]] = {}  # folder/key -> (width, first file with it)
        self.missing_files: dict[str, list[Path]] = {}  # vid or qid -> its absent files
        self.truncated_clips: dict[str, int] = {}  # vid -> clips cut from its longest type
        self._warned_long_cut = False

    # ------------------------------------------------------------------ files
    def video_paths(self, vid: str) -> list[Path]:
        return [self.root / folder / f"{vid}.npz" for folder in self.video_types]

    def text_path(self, qid: str) -> Path:
        return self.root / self.text_type / self.layout.query_file.format(qid=qid)

    def _text_keys(self) -> list[str]:
        return {
            "drop": [self.layout.text_key],
            "prepend": [self.layout.pooled_key, self.layout.text_key],
            "only": [self.layout.pooled_key],
        }[self.pooled_token]

    def _headers(self, path: Path, keys: Sequence[str]) -> list[tuple[tuple[int, ...], np.dtype]]:
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                absent = [key for key in keys if f"{key}.npy" not in names]
                if absent:
                    held = sorted(name.removesuffix(".npy") for name in names)
                    raise ValueError(
                        f"{path} has no array {absent[0]!r} (it holds {held}); pass the right key "
                        "(--video-key / --text-key / --pooled-key)"
                    )
                headers = [_npy_header(archive, f"{key}.npy") for key in keys]
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise ValueError(f"{path} is not a readable .npz archive ({error}); re-extract it") from None
        for key, (_, dtype) in zip(keys, headers):
            if dtype.kind != "f":
                raise ValueError(f"{path}: array {key!r} has dtype {dtype}, expected floating-point features")
        return headers

    def _check_width(self, path: Path, key: str, folder: str, width: int) -> None:
        """One folder holds one feature type: every file's width must match the first one seen."""
        first = self._widths.setdefault(f"{folder}/{key}", (width, path))
        if first[0] != width:
            raise ValueError(
                f"{path}: {key!r} has {width} features per row, but {first[1]} in the same folder has "
                f"{first[0]}; one folder must hold one feature type"
            )

    @staticmethod
    def _matrix_shape(path: Path, key: str, shape: tuple[int, ...], pooled: bool = False) -> tuple[int, int]:
        if pooled and len(shape) == 1:
            shape = (1, *shape)
        if len(shape) != 2 or shape[0] < 1 or shape[1] < 1 or (pooled and shape[0] != 1):
            expected = "a (d,) or (1, d) vector" if pooled else "a non-empty (rows, d) matrix"
            raise ValueError(f"{path}: array {key!r} has shape {shape}, expected {expected}")
        return shape[0], shape[1]

    @staticmethod
    def _load(path: Path, key: str) -> np.ndarray:
        try:
            with np.load(path, allow_pickle=False) as archive:
                array = np.asarray(archive[key])
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise ValueError(f"{path}: cannot read array {key!r} ({error}); re-extract it") from None
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise ValueError(f"{path}: array {key!r} holds {bad} NaN or infinite values; re-extract it")
        return array.astype(np.float32, copy=False)

    # ------------------------------------------------------- FeatureSource
    def video_shape(self, vid: str) -> tuple[int, int] | None:
        paths = self.video_paths(vid)
        absent = [path for path in paths if not path.is_file()]
        if absent:
            self.missing_files[vid] = absent
            return None
        lengths, width = [], 0
        for path, folder in zip(paths, self.video_types):
            ((shape, _),) = self._headers(path, [self.layout.video_key])
            rows, columns = self._matrix_shape(path, self.layout.video_key, shape)
            self._check_width(path, self.layout.video_key, folder, columns)
            lengths.append(rows)
            width += columns
        if max(lengths) - min(lengths) > self.max_clip_mismatch:
            detail = ", ".join(f"{path}: {rows} clips" for path, rows in zip(paths, lengths))
            raise ValueError(
                f"video {vid!r}: its feature types differ by {max(lengths) - min(lengths)} clips (more than "
                f"{self.max_clip_mismatch}): {detail}; were they extracted at different clip lengths? "
                "Re-extract them at one (or pass max_clip_mismatch, --max-clip-mismatch)"
            )
        if max(lengths) != min(lengths):
            self.truncated_clips[vid] = cut = max(lengths) - min(lengths)
            # A clip or two is the extractors' rounding; more suggests types at different clip rates.
            if cut > max(2, min(lengths) // 10) and not self._warned_long_cut:
                self._warned_long_cut = True
                logger.warning(
                    "%s: the feature types have %s clips; cutting %d clips to the shortest. Are they "
                    "extracted at the same clip length?",
                    vid,
                    dict(zip(self.video_types, lengths)),
                    cut,
                )
        return min(lengths), width + (2 if self.tef else 0)

    def text_shape(self, qid: str) -> tuple[int, int] | None:
        path = self.text_path(qid)
        if not path.is_file():
            self.missing_files[qid] = [path]
            return None
        keys = self._text_keys()
        rows, width = 0, None
        for key, (shape, _) in zip(keys, self._headers(path, keys)):
            key_rows, key_width = self._matrix_shape(path, key, shape, pooled=key == self.layout.pooled_key)
            self._check_width(path, key, self.text_type, key_width)
            if width is not None and key_width != width:
                raise ValueError(
                    f"{path}: {self.layout.pooled_key!r} has width {shape[-1]} but {self.layout.text_key!r} "
                    f"has {width}; use --pooled-token drop"
                )
            rows, width = rows + key_rows, key_width
        return rows, width

    def video(self, vid: str) -> np.ndarray:
        parts = [self._load(path, self.layout.video_key) for path in self.video_paths(vid)]
        if self.layout.normalize_video:
            parts = [l2_normalize(part) for part in parts]
        # "some features are slightly longer than the others" (Moment-DETR): keep the common prefix.
        length = min(len(part) for part in parts)
        parts = [part[:length] for part in parts]
        if self.tef:
            parts.append(temporal_endpoint_features(length))
        return np.concatenate(parts, axis=1)

    def text(self, qid: str) -> np.ndarray:
        path = self.text_path(qid)
        arrays = [self._load(path, key) for key in self._text_keys()]
        matrix = np.concatenate([array.reshape(-1, array.shape[-1]) for array in arrays], axis=0)
        return l2_normalize(matrix) if self.layout.normalize_text else matrix

    # ----------------------------------------------------- builder extras
    def feature_files(self, kind: str, key: str) -> list[str]:
        """The files behind one video ("video") or query ("text"), named in the builder's value errors."""
        return [str(path) for path in (self.video_paths(key) if kind == "video" else [self.text_path(key)])]

    def describe_missing(self, keys: Sequence[str]) -> list[str]:
        """The absent files behind these missing vids / qids (for the builder's error and report)."""
        return [str(path) for key in keys for path in self.missing_files.get(key, [])]

    def fingerprint(self, kind: str, keys: Sequence[str]) -> str:
        """A digest of the options that shape this kind of feature ("video" or "text") and of every file
        (path, size, mtime) behind ``keys``: what the builder compares to resume."""
        if kind == "video":
            paths = [path for key in keys for path in self.video_paths(key)]
            names = ("video_types", "video_key", "normalize_video", "tef")
        else:
            paths = [self.text_path(key) for key in keys]
            names = ("text_type", "text_key", "pooled_key", "query_file", "normalize_text", "pooled_token")
        options = self.options()
        return file_fingerprint(paths, {name: options[name] for name in names})

    def options(self) -> dict[str, Any]:
        return {
            "format": "npz",
            "root": str(self.root),
            "video_types": self.video_types,
            "text_type": self.text_type,
            **dataclasses.asdict(self.layout),
            "tef": self.tef,
            "pooled_token": self.pooled_token,
        }

    def report(self) -> dict[str, Any]:
        """Options, and how many videos were cut to their shortest feature type by how many clips."""
        return {
            **self.options(),
            "truncated_videos": len(self.truncated_clips),
            "truncated_clips": dict(sorted(Counter(self.truncated_clips.values()).items())),
            "truncated_max_clips": max(self.truncated_clips.values(), default=0),
            "missing_files": sum(map(len, self.missing_files.values())),
            "missing_files_examples": [
                str(p) for paths in list(self.missing_files.values())[:10] for p in paths
            ],
        }
