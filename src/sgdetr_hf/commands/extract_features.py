"""``sgdetr extract-features`` (also ``scripts/extract_features.py``): InternVideo2 features for a folder or
list of videos (and their queries) into a feature folder.

Output (the ``FeatureFolder`` format read by ``sgdetr_hf.data.builder``)::

    <output>/videos/<vid>.safetensors    "video_features" (L, d_v), "clip_timestamps" (L, 2) float64 seconds;
                                         metadata: clip_length, frames_per_clip, duration, feature, model, source
    <output>/queries/<qid>.safetensors   "text_features" (N, d_t) with [CLS] and [SEP] rows, no padding;
                                         metadata: query, feature, max_query_length, model

    <output>/fingerprint.json            what determines the features, per kind (see below)

``<vid>`` is the video file's name without extension; queries come from QVHighlights-style JSON Lines
annotations (``qid``, ``query``): every query needs a word, and a ``qid`` given twice must have the same query
both times (it names the query's file; the same file given twice is fine). The sources are read and the
options checked before the encoder loads: a missing or malformed file, a folder without videos, an empty
query or an impossible option is a one-line error naming it, not a failure minutes later. Every file is
written atomically, so a run can be killed and restarted: finished files are skipped. Work is split across
processes with Accelerate, e.g. ``accelerate launch --multi_gpu --num_processes 8
scripts/extract_features.py``. A video that cannot be decoded is logged, listed in
``<output>/failed_videos.txt`` and skipped.

A file counts as finished only when it was made by the same features: its metadata ``fingerprint`` is the
SHA-256 of everything that determines them (:func:`feature_fingerprints`: the encoder's config, a checksum
of its weights, the dtype it ran in, the video processor's settings (clip length, frames, size...) or the
tokenizer's vocabulary and query length, the feature kind and the stored dtype), not the name of the encoder's
folder: two encoders both saved as ``encoder/`` are told apart, and the same encoder moved elsewhere is not.
``fingerprint.json`` keeps those components beside the outputs. A folder made by other features is
refused, not recomputed: the job is resumable, so a mismatch almost always means a wrong ``--model`` or
``--output``, and recomputing would silently throw away (or, if interrupted, mix into the folder) the
finished features; ``--overwrite`` recomputes every file with this encoder and re-keys the folder to it (an
interrupted ``--overwrite`` run then resumes without it, redoing the files of the old encoder). So is a query
file of another query than the annotations now give its qid (edited annotations, or another dataset's qids).
Files are reproducible: a resumed or multi-process run writes the bytes one uninterrupted run writes.
"""

import argparse
import hashlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from safetensors import safe_open
from safetensors.torch import save
from tqdm.auto import tqdm

from ..feature_extraction_sgdetr import (
    MIN_QUERY_LENGTH,
    TEXT_FEATURES,
    VIDEO_FEATURES,
    ExtractorSettingsError,
    SGDetrFeatureExtractor,
)
from ..files import atomic_write_bytes, atomic_write_json, atomic_write_text, strict_json, unwritable_reason
from ..loading_sgdetr import CheckpointError
from ..postprocessing_sgdetr import NonFiniteOutputError
from ..training.distributed import build_accelerator, process_group_teardown
from ..video_io_sgdetr import BACKENDS
from . import CommandLineError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
STORAGE_DTYPES = {"float16": torch.float16, "float32": torch.float32}
ENCODER_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


class SourceError(ValueError):
    """A video source or annotations file that cannot be read as one (named, with the line where it helps)."""


def list_videos(sources: list[str]) -> dict[str, Path]:
    """``vid -> path`` for video files, folders (their video files, not recursive) and ``.txt`` lists of paths.

    Raises:
        SourceError: a missing source, a folder without video files or a list without paths (nothing to
            extract), an unreadable list, or two files with the same ``vid`` (file name without extension).
    """
    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(
                p for p in source.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
            )
            if not found:
                raise SourceError(
                    f"nothing to extract: the folder {source} holds no video file (read: "
                    f"{' '.join(VIDEO_EXTENSIONS)}; sub-folders are not searched)"
                )
            paths += found
        elif source.suffix == ".txt" and source.is_file():
            try:
                lines = source.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise SourceError(f"cannot read the video list {source} ({error})") from None
            listed = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
            if not listed:
                raise SourceError(
                    f"nothing to extract: the video list {source} names no video (one path a line)"
                )
            paths += [source.parent / line for line in listed]
        elif source.is_file():
            paths.append(source)
        else:
            raise SourceError(
                f"video source not found: {source} (give video files, folders of videos or .txt lists of paths)"
            )
    videos: dict[str, Path] = {}
    for path in paths:
        if path.stem in videos and videos[path.stem] != path:
            raise SourceError(f"two videos share the id {path.stem!r}: {videos[path.stem]} and {path}")
        videos[path.stem] = path
    return videos


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else f"{text[: limit - 3]}...")


def _query_problem(qid: Any, query: Any) -> str | None:
    """What makes ``qid`` / ``query`` unusable (the qid names the file ``queries/<qid>.safetensors``)."""
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        return f"the qid {qid!r} is a {type(qid).__name__}, not an int or a string"
    if not str(qid).strip() or str(qid) in (".", "..") or any(sep in str(qid) for sep in ("/", "\\", "\0")):
        return f"the qid {str(qid)!r} cannot name a file (empty, '.', '..' or with a path separator)"
    if not isinstance(query, str):
        return f"the query of qid {str(qid)!r} is a {type(query).__name__}, not a string"
    if not query.strip():
        return f"the query of qid {str(qid)!r} is empty; every query needs at least one word"
    try:  # JSON can spell a lone surrogate ("\ud800"), which no tokenizer or file can take
        query.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"the query of qid {str(qid)!r} is not valid Unicode text (it holds a lone surrogate): {query!r}"
        )
    return None


def read_queries(annotation_files: list[str]) -> dict[str, str]:
    """``qid -> query`` from JSON Lines annotations (QVHighlights format: one object a line with ``qid`` and
    ``query``; blank lines are skipped). A qid given twice with the same query (e.g. a file given twice) is
    read once; with another query it is refused, as its features would silently be the last one's.

    Raises:
        SourceError: a missing or unreadable file, one without queries, or a line (named ``file:line``)
            that is not a JSON object, lacks ``qid`` or ``query``, has an empty query, or repeats a qid with
            another query.
    """
    queries: dict[str, str] = {}
    first_seen: dict[str, str] = {}
    for file in annotation_files:
        try:
            data = Path(file).read_bytes()
        except FileNotFoundError:
            raise SourceError(f"annotations file not found: {file}") from None
        except IsADirectoryError:
            raise SourceError(
                f"{file} is a folder, not an annotations file (JSON Lines: qid, query)"
            ) from None
        except OSError as error:
            raise SourceError(f"cannot read the annotations file {file} ({error.strerror})") from None
        rows = 0
        for number, raw in enumerate(data.splitlines(), 1):
            where = f"{file}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise SourceError(f"{where} is not UTF-8 text: annotations are JSON Lines (UTF-8)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise SourceError(
                    f"{where} is not valid JSON ({error.msg}, column {error.colno}): annotations are JSON "
                    "Lines, one object with 'qid' and 'query' a line"
                ) from None
            if not isinstance(row, dict):
                raise SourceError(
                    f"{where} is a JSON {type(row).__name__}, not an object with 'qid' and 'query'"
                )
            if "qid" not in row or "query" not in row:
                raise SourceError(f"{where} has no 'qid' or 'query' field")
            if problem := _query_problem(row["qid"], row["query"]):
                raise SourceError(f"{where}: {problem}")
            qid, query = str(row["qid"]), row["query"]
            if qid in queries and queries[qid] != query:
                raise SourceError(
                    f"{where}: qid {qid!r} has the query {_shown(query)}, but {_shown(queries[qid])} at "
                    f"{first_seen[qid]}: a qid names one query (its features file); give each query its own qid"
                )
            queries.setdefault(qid, query)
            first_seen.setdefault(qid, where)
            rows += 1
        if not rows:
            raise SourceError(f"nothing to extract: the annotations file {file} holds no query")
    return queries


class OtherFeaturesError(ValueError):
    """The output folder holds features made by another encoder or with other settings."""


class StorageRangeError(ValueError):
    """Features beyond the storage dtype's range: stored, they would be Inf."""


def _stored(features: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    """``features`` (finite: the extractor checks) cast to ``dtype``, or :class:`StorageRangeError`."""
    stored = features.to(dtype)
    if not bool(torch.isfinite(stored).all()):
        raise StorageRangeError(
            f"the features of {what} reach {float(features.abs().max()):.6g}, beyond {dtype}'s range "
            f"(+-{torch.finfo(dtype).max:g}): they would be stored as Inf; pass --dtype float32"
        )
    return stored


FINGERPRINT_FILE = "fingerprint.json"
#: Video processor settings that do not change the frames: the decoders return bit-identical frames.
_FRAME_NEUTRAL_SETTINGS = ("backend", "video_processor_type")


def weights_checksum(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (every name, dtype, shape and byte), one tensor on the CPU at a time,
    so a 1B-parameter model on a GPU needs no second copy in memory."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _without_private_keys(config: Any) -> Any:
    """A config dict without the keys that say where it was loaded from or by which version, not what it is."""
    if isinstance(config, dict):
        return {
            key: _without_private_keys(value)
            for key, value in config.items()
            if not str(key).startswith("_") and key not in ("transformers_version", "torch_dtype", "dtype")
        }
    return config


def feature_fingerprints(extractor: SGDetrFeatureExtractor, storage_dtype: torch.dtype) -> dict[str, dict]:
    """What determines the stored features, per kind (``"videos"``, ``"queries"``); JSON-ready."""
    model = extractor.model
    common = {
        # to_diff_dict: the model's own settings, not generic defaults (a transformers upgrade may add some)
        "encoder_config": _without_private_keys(model.config.to_diff_dict()),
        "weights_sha256": weights_checksum(model),
        "encoder_dtype": str(model.dtype),
        "storage_dtype": str(storage_dtype),
    }
    video_processor = extractor.processor.video_processor.to_dict()
    tokenizer = extractor.processor.tokenizer
    vocabulary = strict_json(sorted(tokenizer.get_vocab().items()))
    fingerprints = {
        "videos": {
            **common,
            "video_feature": extractor.video_feature,
            "video_processor": {
                key: value for key, value in video_processor.items() if key not in _FRAME_NEUTRAL_SETTINGS
            },
        },
        "queries": {
            **common,
            "text_feature": extractor.text_feature,
            "max_query_length": extractor.processor.max_query_length,
            "tokenizer": {
                "class": type(tokenizer).__name__,
                "vocabulary_sha256": hashlib.sha256(vocabulary.encode()).hexdigest(),
                "do_lower_case": getattr(tokenizer, "do_lower_case", None),
            },
        },
    }
    # as read back from fingerprint.json (JSON has string keys and lists, not tuples)
    return json.loads(strict_json(fingerprints))


def _digest(fingerprint: dict) -> str:
    return hashlib.sha256(strict_json(fingerprint, sort_keys=True).encode()).hexdigest()


def _differences(stored: Any, current: Any, prefix: str = "") -> list[str]:
    """``key: stored -> current`` for every leaf that differs (long values shortened)."""
    if isinstance(stored, dict) and isinstance(current, dict):
        return [
            line
            for key in sorted(set(stored) | set(current), key=str)
            for line in _differences(stored.get(key), current.get(key), f"{prefix}{key}.")
        ]
    if stored == current:
        return []
    shown = [str(value) if len(str(value)) <= 16 else f"{str(value)[:12]}..." for value in (stored, current)]
    return [f"{prefix[:-1]}: {shown[0]} -> {shown[1]}"]


def _folder_is_keyed(output_dir: Path, fingerprints: dict[str, dict], overwrite: bool) -> bool:
    """Whether ``output_dir/fingerprint.json`` holds ``fingerprints``. Another fingerprint is refused
    (``ValueError`` listing what differs) unless ``overwrite``."""
    path = output_dir / FINGERPRINT_FILE
    if not path.is_file():
        return False
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); restore it, or recompute with --overwrite"
        ) from None
    if stored == fingerprints:
        return True
    if overwrite:
        return False
    changes = _differences(stored, fingerprints)
    shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
    raise OtherFeaturesError(
        f"{output_dir} holds features of another encoder or other settings ({shown}; stored -> this run): "
        "use another --output, or --overwrite to recompute every file with this encoder"
    )


def _is_finished(path: Path, digest: str, folder_is_keyed: bool, query: str | None = None) -> bool:
    """Whether ``path`` holds features made with the fingerprint ``digest`` (of ``query``, for a query's
    file); a damaged file is not. A file of other features is redone in a folder keyed to these (an
    interrupted --overwrite run), else refused; so is the file of another query under the same qid."""
    if not path.is_file():
        return False
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
    except Exception:  # a damaged file is redone
        return False
    if metadata.get("fingerprint") == digest:
        if query is not None and metadata.get("query") != query:
            # the annotations changed, or another dataset's qids collide with these: keeping the file would
            # give this qid another query's features, recomputing it would break the other dataset's
            raise OtherFeaturesError(
                f"{path} holds the features of the query {_shown(metadata.get('query', ''))}, but the "
                f"annotations give its qid the query {_shown(query)}: delete the file to recompute it, or use "
                "another --output"
            )
        return True
    if folder_is_keyed:
        return False
    made_by = (
        "by an older version (no fingerprint)"
        if "fingerprint" not in metadata
        else "by another encoder or with other settings"
    )
    raise OtherFeaturesError(
        f"{path} was extracted {made_by}: use another --output, or --overwrite to recompute every file"
    )


def _check_words(processor, queries: dict[str, str]) -> None:
    """:class:`SourceError` naming the qid of a query whose characters the tokenizer all drops (control,
    zero-width or combining ones): the one problem of a query that :func:`_query_problem` cannot see."""
    if not queries:
        return
    try:  # all at once: the too long queries give one warning, not one each
        processor.tokenize_queries(list(queries.values()))
    except ValueError:  # which one
        for qid, query in queries.items():
            try:
                processor.tokenize_queries(query)
            except ValueError:
                raise SourceError(
                    f"the query of qid {qid!r} ({query!r}) has no word: the tokenizer drops all its characters "
                    "(control, zero-width or combining ones); every query needs at least one word"
                ) from None


def _with_sorted_header(data: bytes) -> bytes:
    """A safetensors file's bytes with its JSON header's keys sorted. safetensors writes the metadata in
    hash order, which changes from call to call: without this, the same features (a resumed run, another
    process count) would give files of other bytes."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    header = header.encode()
    header += b" " * (-len(header) % 8)  # the format's padding: the tensor data starts 8-byte aligned
    return len(header).to_bytes(8, "little") + header + data[8 + length :]


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    data = save({key: value.contiguous() for key, value in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, _with_sorted_header(data))


def extract_features(
    extractor: SGDetrFeatureExtractor,
    videos: dict[str, Path],
    queries: dict[str, str],
    output_dir: str | Path,
    model_name: str = "",
    storage_dtype: torch.dtype = torch.float16,
    query_batch_size: int = 256,
    overwrite: bool = False,
    accelerator=None,
) -> list[str]:
    """Write the feature files of ``videos`` and ``queries`` that are not there yet.

    Args:
        extractor: model + processor, on this process's device.
        videos: ``vid -> path``; queries: ``qid -> text``.
        model_name: written into each file's metadata, for people (the fingerprint, not it, decides whether
            a file is finished).
        overwrite: recompute every file, even of other features (refused without it), and key the folder to
            these.
        storage_dtype: dtype of the stored features.
        accelerator: splits the work across processes (``None``: this process does everything).

    Returns:
        The ids of the videos this process could not decode.
    """
    for qid, query in queries.items():  # before any work: named by qid, not by its place in a batch
        if problem := _query_problem(qid, query):
            raise SourceError(problem)
    _check_words(extractor.processor, queries)
    output_dir = Path(output_dir)
    fingerprints = feature_fingerprints(extractor, storage_dtype)
    digests = {kind: _digest(fingerprint) for kind, fingerprint in fingerprints.items()}
    # Informational only (what made the files); the fingerprint decides whether a file is finished.
    settings = {
        "videos": {
            "model": model_name,
            "feature": extractor.video_feature,
            "clip_length": str(extractor.processor.video_processor.clip_length),
            "frames_per_clip": str(extractor.processor.video_processor.frames_per_clip),
            "fingerprint": digests["videos"],
        },
        "queries": {
            "model": model_name,
            "feature": extractor.text_feature,
            "max_query_length": str(extractor.processor.max_query_length),
            "fingerprint": digests["queries"],
        },
    }
    is_main = accelerator is None or accelerator.is_local_main_process
    keyed = _folder_is_keyed(output_dir, fingerprints, overwrite)

    def todo(kind: str, ids: list[str]) -> list[str]:
        folder = output_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        return [
            i
            for i in ids
            if overwrite
            or not _is_finished(
                folder / f"{i}.safetensors", digests[kind], keyed, queries[i] if kind == "queries" else None
            )
        ]

    if is_main:  # temporary files of an interrupted run
        for leftover in output_dir.glob("*/.*.safetensors.*.tmp"):
            leftover.unlink()
    all_qids = sorted(queries)
    pending_queries, pending_videos = set(todo("queries", all_qids)), todo("videos", sorted(videos))
    # Batches are cut from every query, finished or not: a query's features change in their last bits with
    # the batch it is encoded in, and a resumed or multi-process run must write the same files as one run.
    query_batches = [
        batch
        for start in range(0, len(all_qids), query_batch_size)
        if pending_queries.intersection(batch := all_qids[start : start + query_batch_size])
    ]
    if accelerator is not None:
        # Every process must see the same to-do lists before anyone writes, or the split would differ.
        accelerator.wait_for_everyone()
    if is_main and not keyed:  # after every process has read the old one
        atomic_write_json(output_dir / FINGERPRINT_FILE, fingerprints)
    if accelerator is not None:
        with accelerator.split_between_processes(query_batches) as share:
            query_batches = list(share)
        with accelerator.split_between_processes(pending_videos) as share:
            pending_videos = list(share)

    for qids in tqdm(query_batches, desc="queries", disable=not is_main):
        encoded = extractor.encode_queries([queries[qid] for qid in qids])
        for qid, rows in zip(qids, encoded.unpadded()):
            if qid not in pending_queries:  # finished, by the run this one resumes
                continue
            metadata = {**settings["queries"], "query": queries[qid]}
            _write(
                output_dir / "queries" / f"{qid}.safetensors",
                {"text_features": _stored(rows, storage_dtype, f"query {qid!r}")},
                metadata,
            )

    failed = []
    for vid in tqdm(pending_videos, desc="videos", disable=not is_main):
        try:
            encoded = extractor.encode_video(videos[vid])
        # the encoder's failure (its dtype or weights), not the video's: every video would fail with it
        except NonFiniteOutputError:
            raise
        except ValueError as error:  # undecodable video: record it and go on
            logger.error("skipping %s: %s", vid, error)
            failed.append(vid)
            continue
        duration = float(encoded.clip_timestamps[-1, 1])
        metadata = {**settings["videos"], "duration": str(duration), "source": str(videos[vid])}
        tensors = {
            "video_features": _stored(encoded.features, storage_dtype, f"video {vid!r}"),
            "clip_timestamps": encoded.clip_timestamps,
        }
        _write(output_dir / "videos" / f"{vid}.safetensors", tensors, metadata)
    return failed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="converted InternVideo2 folder (convert_internvideo2_checkpoint)"
    )
    parser.add_argument(
        "--videos", nargs="*", default=[], help="video files, folders of videos, .txt lists of paths"
    )
    parser.add_argument("--annotations", nargs="*", default=[], help="JSON Lines with qid and query fields")
    parser.add_argument("--output", required=True, help="feature folder (videos/ and queries/ inside)")
    parser.add_argument(
        "--clip-length", type=float, help="clip length in seconds (default: the processor's, 2)"
    )
    parser.add_argument("--frames-per-clip", type=int, help="frames per clip (default: the processor's, 4)")
    parser.add_argument(
        "--max-query-length",
        type=int,
        help=f"tokens per query, [CLS] and [SEP] included (>= {MIN_QUERY_LENGTH}; default: the processor's)",
    )
    parser.add_argument("--backend", choices=BACKENDS, help="video decoder (default: the processor's, pyav)")
    parser.add_argument("--video-feature", choices=VIDEO_FEATURES, default="projected")
    parser.add_argument("--text-feature", choices=TEXT_FEATURES, default="projected")
    parser.add_argument("--clips-per-batch", type=int, default=32, help="clips per vision-tower forward pass")
    parser.add_argument(
        "--dtype", choices=sorted(STORAGE_DTYPES), default="float16", help="stored feature dtype"
    )
    parser.add_argument(
        "--encoder-dtype",
        choices=sorted(ENCODER_DTYPES),
        help="the encoder's dtype (default: bfloat16 on a GPU, float32 on the CPU)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="recompute every file, also those of another encoder or other settings (refused without it)",
    )


def _output_problem(output: Path) -> str | None:
    """Why ``output`` cannot be (or become) the feature folder, or ``None``."""
    reason = unwritable_reason(output, folder=True)
    if reason is None:
        return None
    hint = (
        "; give the feature folder to write (new or a previous run's)"
        if reason.startswith("it is a file")
        else ""
    )
    return f"--output {output}: {reason}{hint}"


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse options that cannot give features (:class:`CommandLineError`), before anything is read."""
    if not args.videos and not args.annotations:
        raise CommandLineError(
            "nothing to extract: give --videos (video files, folders of videos, .txt lists of paths) and/or "
            "--annotations (JSON Lines with qid and query)"
        )
    if args.clip_length is not None and not (math.isfinite(args.clip_length) and args.clip_length > 0):
        raise CommandLineError(
            f"--clip-length must be a finite number of seconds > 0, got {args.clip_length}"
        )
    for option, value, least, why in (
        ("--frames-per-clip", args.frames_per_clip, 1, ""),
        ("--clips-per-batch", args.clips_per_batch, 1, ""),
        (
            "--max-query-length",
            args.max_query_length,
            MIN_QUERY_LENGTH,
            " (room for [CLS], a word and [SEP])",
        ),
    ):
        if value is not None and value < least:
            raise CommandLineError(f"{option} must be >= {least}{why}, got {value}")
    if problem := _output_problem(Path(args.output)):
        raise CommandLineError(problem)


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    try:
        videos, queries = list_videos(args.videos), read_queries(args.annotations)
    except SourceError as error:  # a wrong path or a malformed file: the user's to fix
        raise CommandLineError(str(error)) from None
    accelerator = build_accelerator(args.output, mixed_precision="no", log_with=None)
    video_settings = {
        key: value
        for key, value in (
            ("clip_length", args.clip_length),
            ("frames_per_clip", args.frames_per_clip),
            ("backend", args.backend),
        )
        if value is not None
    }
    with process_group_teardown():
        try:
            extractor = SGDetrFeatureExtractor.from_pretrained(
                args.model,
                device=accelerator.device,
                dtype=ENCODER_DTYPES.get(args.encoder_dtype),
                max_query_length=args.max_query_length,
                video_processor_kwargs=video_settings,
                video_feature=args.video_feature,
                text_feature=args.text_feature,
                clips_per_batch=args.clips_per_batch,
            )
        except CheckpointError as error:  # not an InternVideo2 folder, or a damaged one: which file, no trace
            print(f"error: {error}", file=sys.stderr)
            return 2
        except ExtractorSettingsError as error:  # e.g. --max-query-length beyond the text encoder's positions
            raise CommandLineError(str(error)) from None
        try:
            failed = extract_features(
                extractor,
                videos,
                queries,
                args.output,
                model_name=os.path.basename(os.path.normpath(args.model)),
                storage_dtype=STORAGE_DTYPES[args.dtype],
                overwrite=args.overwrite,
                accelerator=accelerator,
            )
        # --output or --model is not what the user meant, a query has no word, the encoder overflowed, or
        # its features overflow the storage dtype: a usage error, named in one line
        except (OtherFeaturesError, SourceError, NonFiniteOutputError, StorageRangeError) as error:
            raise CommandLineError(str(error)) from None
        failed = sorted(gather_object(failed))
        if accelerator.is_main_process:
            failure_list = Path(args.output) / "failed_videos.txt"
            if failed:
                atomic_write_text(failure_list, "\n".join(failed) + "\n")
            else:
                failure_list.unlink(missing_ok=True)
            print(
                f"{len(videos) - len(failed)}/{len(videos)} videos and {len(queries)} queries in {args.output}"
            )
        accelerator.wait_for_everyone()
    return 1 if failed else 0


__all__ = [
    "OtherFeaturesError",
    "SourceError",
    "extract_features",
    "feature_fingerprints",
    "list_videos",
    "read_queries",
    "weights_checksum",
]
