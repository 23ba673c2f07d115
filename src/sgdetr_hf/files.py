"""Files the package writes, atomically: a reader (or a crash) never sees a half-written file.

Every writer goes through :func:`atomic_output`: the data goes to a temporary file in the destination's
folder (same file system, so the final ``os.replace`` is atomic), which becomes an ordinary 0644 file. A whole
folder (a converted model) is built the same way, by :func:`atomic_folder`.
JSON is strict: NaN and Infinity are refused (they are not JSON, and strict readers reject them).

Not Hub remote code: the model repository never writes files. The self-contained metric folder
(``metrics/sgdetr_eval/``) keeps its own writer, as it must run without this package.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import reprlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it replaces ``path``, on error it is removed.

    For writers that want a path of their own (e.g. ``pyarrow.parquet.write_table``)::

        with atomic_output("shard.parquet") as temporary:
            pq.write_table(table, temporary)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(directory: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``directory`` to build a whole folder in; on success it is renamed to
    ``directory``, on error it is removed: the folder is complete or absent, never half-written.

    ``directory`` must be new or an empty folder (a folder holding files is never replaced: it may be the
    user's). Its files become ordinary 0644 files in 0755 folders (``mkdtemp`` makes 0700, safetensors 0600).

    Raises:
        FileExistsError: ``directory`` exists and is not an empty folder (checked before anything is built).
    """
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(
            f"{directory} already exists and is not an empty folder: choose a new output folder"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        yield build
        for path in (build, *build.rglob("*")):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.replace(build, directory)  # an empty directory is replaced
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def unwritable_reason(path: Path, folder: bool = False) -> str | None:
    """Why ``path`` cannot be written as a file (``folder=False``) or made a folder, or ``None``: the other kind
    stands there, a file stands where a parent folder would be made, or the name is impossible (e.g. too long
    for the file system). For checking an output path before the work that fills it."""
    try:
        if path.exists() and path.is_dir() != folder:
            return "it is a file, not a folder" if folder else "it is a folder, not a file"
        existing = next((parent for parent in path.parents if parent.exists()), None)
    except OSError as error:
        return f"it cannot be written ({error.strerror or error})"
    if existing is not None and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_output(path) as temporary, open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj: Any, what: str = "value", **dumps_options: Any) -> str:
    """``json.dumps(obj, allow_nan=False, **dumps_options)`` whose error names ``what``: the one JSON encoder
    of the package, for files and for JSON printed to the console alike.

    Raises:
        ValueError: ``obj`` holds NaN or Infinity. TypeError: ``obj`` holds something JSON cannot encode.
    """
    try:
        return json.dumps(obj, allow_nan=False, **dumps_options)
    except ValueError as error:  # "Out of range float values are not JSON compliant"
        raise ValueError(f"{what}: {error} (NaN or Infinity has no JSON form)") from None


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as indented JSON (with a final newline) to ``path`` atomically.

    Raises:
        ValueError: ``obj`` holds NaN or Infinity. TypeError: ``obj`` holds something JSON cannot encode.
    """
    return atomic_write_text(path, strict_json(obj, f"cannot write {path}", indent=indent) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """Write ``rows`` as JSON Lines (one strict JSON value per line) to ``path`` atomically."""
    lines = [strict_json(row, f"cannot write {path}: line {number}") for number, row in enumerate(rows, 1)]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def _as_list(value: Any) -> Any:
    """A numpy array or tensor as (nested) Python lists; anything else as it is."""
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        return value.tolist()
    return value


def _finite_numbers(values: Any, what: str) -> list[float]:
    """``values`` (a list, tuple or array) as floats: finite real numbers, not bools or strings.

    Raises:
        ValueError: ``"<what> ..."`` naming the first offending element.
    """
    values = _as_list(values)
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{what} is {reprlib.repr(values)}, not a list")
    floats = []
    for position, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"{what} holds {reprlib.repr(value)} (element {position}), which is not a number"
            )
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            number = math.inf
        if not math.isfinite(number):
            raise ValueError(
                f"{what} holds {reprlib.repr(value)} (element {position}), which is not a finite number "
                "(NaN or Infinity has no JSON form)"
            )
        floats.append(number)
    return floats


_WINDOWS_EXPECTED = (
    "a list of [start, end, score] windows: three finite numbers each, in seconds, start <= end"
)


def write_qvhighlights_predictions(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write predictions as QVHighlights JSON Lines (one object per query), atomically.

    Each record is a mapping with ``qid`` (an int or a string; numpy integers are written as ints) and
    ``pred_relevant_windows`` (``[[start_s, end_s, score], ...]``, three finite numbers each with
    ``start <= end``: a zero-length window is kept, the evaluator gives it IoU 0; an empty list is written
    as it is). ``query``, ``vid`` and ``pred_saliency_scores`` (finite numbers; ``None`` counts as absent)
    are written when present (Charades / TACoS files have no saliency), first, then any other keys (JSON
    values). Windows and saliency scores are written as floats; numpy arrays are accepted for them.

    Raises:
        ValueError: a record breaks the rules above; the message names the record (0-based) and its qid,
            and nothing is written.
    """
    lines = []
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(
                f"record {i} is {reprlib.repr(record)} ({type(record).__name__}); expected a mapping with "
                "'qid' and 'pred_relevant_windows'"
            )
        if record.get("qid") is None or record.get("pred_relevant_windows") is None:
            raise ValueError(
                f"record {i} needs 'qid' and 'pred_relevant_windows' (not None), "
                f"got keys {sorted(map(str, record))}."
            )
        qid = record["qid"]
        if isinstance(qid, numbers.Integral) and not isinstance(qid, bool):
            qid = int(qid)  # e.g. numpy.int64, which json cannot encode
        if isinstance(qid, bool) or not isinstance(qid, (int, str)):
            raise ValueError(
                f"record {i}: 'qid' is {reprlib.repr(qid)}; expected an int or a string identifying the query"
            )
        name = f"record {i} (qid {qid!r})"
        windows = _as_list(record["pred_relevant_windows"])
        if isinstance(windows, (str, bytes)) or not isinstance(windows, (list, tuple)):
            raise ValueError(
                f"{name}: 'pred_relevant_windows' is {reprlib.repr(windows)}; expected {_WINDOWS_EXPECTED}"
            )
        ordered: dict[str, Any] = {
            "qid": qid,
            **{key: record[key] for key in ("query", "vid") if key in record},
        }
        ordered["pred_relevant_windows"] = []
        for j, window in enumerate(windows):
            window, what = _as_list(window), f"'pred_relevant_windows' entry {j}"
            try:
                start_end_score = _finite_numbers(window, what)
                if len(start_end_score) != 3:
                    raise ValueError(
                        f"{what} is {reprlib.repr(window)}, with {len(start_end_score)} number(s)"
                    )
                if start_end_score[0] > start_end_score[1]:
                    raise ValueError(f"{what} is {reprlib.repr(window)}, whose start is after its end")
            except ValueError as error:
                raise ValueError(f"{name}: {error}; expected {_WINDOWS_EXPECTED}") from None
            ordered["pred_relevant_windows"].append(start_end_score)
        if record.get("pred_saliency_scores") is not None:
            try:
                scores = _finite_numbers(record["pred_saliency_scores"], "'pred_saliency_scores'")
            except ValueError as error:
                raise ValueError(f"{name}: {error}; expected one finite number per clip") from None
            ordered["pred_saliency_scores"] = scores
        ordered.update({k: v for k, v in record.items() if k not in ordered and k != "pred_saliency_scores"})
        try:
            lines.append(strict_json(ordered, name))
        except TypeError as error:  # e.g. a numpy array among the other keys
            raise ValueError(f"{name}: {error}; expected JSON values (lists, numbers, strings)") from None
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


__all__ = [
    "atomic_folder",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_jsonl",
    "atomic_write_text",
    "strict_json",
    "unwritable_reason",
    "write_qvhighlights_predictions",
]
