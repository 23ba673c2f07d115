"""Files the package writes, atomically: a reader (or a crash) never sees a half-written file.

Every writer goes through :func:`atomic_output`: the data goes to a temporary file in the destination's
folder (same file system, so the final ``os.replace`` is atomic), which becomes an ordinary 0644 file.
JSON is strict: NaN and Infinity are refused (they are not JSON, and strict readers reject them).

Not Hub remote code: the model repository never writes files. The self-contained metric folder
(``metrics/sgdetr_eval/``) keeps its own writer, as it must run without this package.
"""

from __future__ import annotations

import contextlib
import json
import os
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


def write_qvhighlights_predictions(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write predictions as QVHighlights JSON Lines (one object per query), atomically.

    Each record needs ``qid`` and ``pred_relevant_windows``; ``query``, ``vid`` and ``pred_saliency_scores`` are
    written when present (Charades / TACoS files have no saliency), first, then any other keys.
    """
    lines = []
    for i, record in enumerate(records):
        if "qid" not in record or "pred_relevant_windows" not in record:
            raise ValueError(
                f"record {i} needs 'qid' and 'pred_relevant_windows', got keys {sorted(record)}."
            )
        ordered = {key: record[key] for key in ("qid", "query", "vid") if key in record}
        ordered["pred_relevant_windows"] = [[float(x) for x in w] for w in record["pred_relevant_windows"]]
        if "pred_saliency_scores" in record:
            ordered["pred_saliency_scores"] = [float(x) for x in record["pred_saliency_scores"]]
        ordered.update({k: v for k, v in record.items() if k not in ordered})
        lines.append(strict_json(ordered, f"record {i} (qid {record['qid']})"))
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


__all__ = [
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_jsonl",
    "atomic_write_text",
    "strict_json",
    "write_qvhighlights_predictions",
]
