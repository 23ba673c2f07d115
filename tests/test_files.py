"""Atomic file writes (sgdetr_hf.files): whole files or none, ordinary permissions, strict JSON."""

import json
import math
import stat

import pytest

from sgdetr_hf.files import atomic_output, atomic_write_bytes, atomic_write_json, atomic_write_text


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
