"""Atomic file writes (sgdetr_hf.files): whole files or none, ordinary permissions, strict JSON."""

import json
import math
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from metrics_testing import QVH_REFERENCE
from sgdetr_hf.files import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    strict_json,
    write_qvhighlights_predictions,
)
from sgdetr_hf.metrics import compute_metrics, read_jsonl


def test_atomic_write_leaves_only_the_file(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 2\n}\n'
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_writers_create_folders_and_return_the_path(tmp_path):
    assert atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01") == tmp_path / "a" / "b.bin"
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "c.txt", "é\n")
    assert (tmp_path / "c.txt").read_bytes() == "é\n".encode()
    atomic_write_json(tmp_path / "d.json", [1.5], indent=4)
    assert (tmp_path / "d.json").read_text() == "[\n    1.5\n]\n"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_json_is_strict_and_a_refused_write_keeps_the_old_file(tmp_path, value):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(ValueError, match=r"cannot write .*m\.json.*NaN or Infinity"):
        atomic_write_json(path, {"loss": value})
    assert json.loads(path.read_text()) == {"ok": 1} and [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_json_lines_and_printed_json_are_strict(tmp_path):
    path = tmp_path / "rows.jsonl"
    atomic_write_jsonl(path, [{"a": 1}, [2.5]])
    assert path.read_text() == '{"a": 1}\n[2.5]\n'
    with pytest.raises(ValueError, match=r"cannot write .*rows\.jsonl: line 2.*NaN or Infinity"):
        atomic_write_jsonl(path, [{"a": 1}, {"b": math.nan}])
    assert path.read_text() == '{"a": 1}\n[2.5]\n' and [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]
    assert strict_json({"a": [1, 2]}, indent=None) == '{"a": [1, 2]}'
    with pytest.raises(ValueError, match=r"the prediction: .*NaN or Infinity"):
        strict_json({"score": -math.inf}, "the prediction")


def test_no_module_writes_lenient_json():
    """Every json.dump(s) of the package, the scripts and the Hub files is strict: it goes through
    files.strict_json, or passes allow_nan=False where the package cannot be imported."""
    root = Path(__file__).resolve().parents[1]
    lenient = []
    for folder in ("src", "scripts", "hub"):
        for path in sorted((root / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"json\.dumps?\(", line) and "allow_nan=False" not in line:
                    lenient.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    # compares two metric dicts as texts, writes nothing
    allowed = "scripts/benchmark_metrics.py", "same = json.dumps(official) == json.dumps(ours)"
    assert [entry for entry in lenient if not entry.startswith(allowed[0]) or allowed[1] not in entry] == []


def test_a_failing_writer_removes_its_temporary_file(tmp_path):
    path = tmp_path / "shard.parquet"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(path) as temporary:
        temporary.write_text("half")
        raise RuntimeError("the writer crashed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["shard.parquet"]
    with atomic_output(path) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".shard.parquet.")
        temporary.write_text("new")
    assert path.read_text() == "new"


# ----------------------------------------------------------------------- write_qvhighlights_predictions
GOOD_RECORD = {"qid": 1, "query": "q", "vid": "v", "pred_relevant_windows": [[40, 80, 0.9]]}
BAD_RECORDS = {
    "reversed window": (
        {"pred_relevant_windows": [[0, 10, 0.9], [10, 5, 0.5]]},
        r"record 1 \(qid 1\): 'pred_relevant_windows' entry 1 is \[10, 5, 0.5\], whose start is after its "
        r"end; expected .*start <= end",
    ),
    "two numbers": ({"pred_relevant_windows": [[10, 5]]}, r"entry 0 is \[10, 5\], with 2 number\(s\)"),
    "four numbers": ({"pred_relevant_windows": [[1, 5, 0.5, 2]]}, r"entry 0 is \[1, 5, 0.5, 2\], with 4"),
    "qid None": ({"qid": None}, r"record 1 needs 'qid' and 'pred_relevant_windows' \(not None\)"),
    "qid missing": ({"qid": ...}, r"record 1 needs 'qid'"),  # ... removes the key
    "qid bool": ({"qid": True}, r"record 1: 'qid' is True; expected an int or a string"),
    "qid float": ({"qid": 1.0}, r"record 1: 'qid' is 1.0; expected an int or a string"),
    "strings in a window": (
        {"pred_relevant_windows": [["1", "2", "0.5"]]},
        r"record 1 \(qid 1\): 'pred_relevant_windows' entry 0 holds '1' \(element 0\), which is not a number",
    ),
    "bools in a window": ({"pred_relevant_windows": [[True, False, True]]}, r"holds True \(element 0\)"),
    "None in a window": ({"pred_relevant_windows": [[None, 2, 0.5]]}, r"entry 0 holds None \(element 0\)"),
    "NaN in a window": ({"pred_relevant_windows": [[0, math.nan, 0.5]]}, r"holds nan .*not a finite number"),
    "huge int in a window": ({"pred_relevant_windows": [[0, 10**400, 0.5]]}, r"not a finite number"),
    "window not a list": ({"pred_relevant_windows": [5]}, r"entry 0 is 5, not a list"),
    "windows an int": (
        {"pred_relevant_windows": 5},
        r"record 1 \(qid 1\): 'pred_relevant_windows' is 5; expected",
    ),
    "windows a string": (
        {"pred_relevant_windows": "0 10 1"},
        r"'pred_relevant_windows' is '0 10 1'; expected",
    ),
    "windows None": ({"pred_relevant_windows": None}, r"record 1 needs 'qid' and 'pred_relevant_windows'"),
    "text saliency": (
        {"pred_saliency_scores": [0.5, "a"]},
        r"record 1 \(qid 1\): 'pred_saliency_scores' holds 'a' \(element 1\), which is not a number",
    ),
    "saliency an int": ({"pred_saliency_scores": 3}, r"'pred_saliency_scores' is 3, not a list"),
    "array in another key": (
        {"extra": np.zeros(2)},
        r"record 1 \(qid 1\): Object of type ndarray is not JSON serializable",
    ),
}


@pytest.mark.parametrize("change, message", BAD_RECORDS.values(), ids=BAD_RECORDS)
def test_write_predictions_refuses_what_the_evaluator_would_reject(tmp_path, change, message):
    path = tmp_path / "preds.jsonl"
    path.write_text("old\n")
    bad = {key: value for key, value in {**GOOD_RECORD, **change}.items() if value is not ...}
    with pytest.raises(ValueError, match=message):
        write_qvhighlights_predictions(path, [GOOD_RECORD, bad])
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["preds.jsonl"]


def test_write_predictions_refuses_a_record_that_is_not_a_mapping(tmp_path):
    with pytest.raises(ValueError, match=r"record 1 is 5 \(int\); expected a mapping with 'qid'"):
        write_qvhighlights_predictions(tmp_path / "p.jsonl", [GOOD_RECORD, 5])
    with pytest.raises(ValueError, match=r"record 0 is \[1, 2\] \(list\); expected a mapping"):
        write_qvhighlights_predictions(tmp_path / "p.jsonl", [[1, 2]])
    assert list(tmp_path.iterdir()) == []


def test_write_predictions_accepts_numpy_and_what_the_evaluator_reads(tmp_path):
    records = [
        {
            "qid": np.int64(1),
            "pred_relevant_windows": np.array([[40, 80, 0.9], [60, 60, 0.5]], dtype=np.float32),
            "pred_saliency_scores": np.arange(75, dtype=np.float64) / 75,
        },
        {
            "qid": 2,
            "pred_relevant_windows": [(np.float32(0.5), 10, np.int64(1))],
            "pred_saliency_scores": None,
        },
    ]
    path = write_qvhighlights_predictions(tmp_path / "p.jsonl", records)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["qid"] == 1 and lines[0]["pred_relevant_windows"] == [
        [40.0, 80.0, 0.8999999761581421],
        [60.0, 60.0, 0.5],
    ]
    assert len(lines[0]["pred_saliency_scores"]) == 75
    assert lines[1] == {"qid": 2, "pred_relevant_windows": [[0.5, 10.0, 1.0]]}  # None saliency: absent
    references = [{**QVH_REFERENCE, "qid": qid} for qid in (1, 2)]  # MR only: the second has no saliency
    assert compute_metrics("charades_sta", read_jsonl(path), references) == compute_metrics(
        "charades_sta", records, references
    )
    assert compute_metrics("qvhighlights", read_jsonl(path)[:1], references[:1]) == compute_metrics(
        "qvhighlights", records[:1], references[:1]
    )
