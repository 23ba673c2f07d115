"""Atomic file writes (sgdetr_hf.files): whole files or none, ordinary permissions, strict JSON."""

import json
import math
import re
import stat
from pathlib import Path

import pytest

from sgdetr_hf.files import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    strict_json,
)


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
