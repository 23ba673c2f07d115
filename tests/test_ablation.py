"""The Table 2 ablation script: its rows are the paper's, and every row trains with its switches set."""

from __future__ import annotations

import json
import math
import shlex

import pytest

from scripts_testing import load_script


@pytest.fixture(scope="module")
def ablation():
    return load_script("ablation")


def test_rows_follow_table_2(ablation):
    """(a) has none of the four parts, each row adds one in Table 2's column order, (e) has them all."""
    switches = list(ablation.SWITCHES)
    rows = [ablation.ROWS[row] for row in "abcde"]
    assert list(ablation.ROWS) == list("abcde") and all(list(row) == switches for row in rows)
    assert not any(rows[0].values()) and all(rows[-1].values())
    for step, (before, after) in enumerate(zip(rows, rows[1:])):
        added = [name for name in switches if after[name] and not before[name]]
        assert added == [switches[step]] and all(after[name] for name in switches if before[name])


def test_summary_is_mean_and_sample_std(ablation):
    assert ablation.summarise([1.0, 2.0, 6.0]) == {"mean": 3.0, "std": pytest.approx(math.sqrt(7.0))}
    assert ablation.summarise([4.0]) == {"mean": 4.0, "std": None}
    with pytest.raises(ValueError, match="rows"):
        ablation.AblationSettings(check=ablation.QUICK_ABLATION.check, rows=("f",))


@pytest.mark.parametrize(
    "options, message",
    [
        (["--steps", "0"], "CheckSettings.steps must be > 0, got 0"),
        (["--seeds", "1", "1"], "AblationSettings.seeds must not repeat, got (1, 1)"),
        (["--rows", "a", "b", "a"], "AblationSettings.rows must not repeat, got ('a', 'b', 'a')"),
        (["--output-dir", "{file}"], "--output-dir {file}: File exists"),
    ],
)
def test_bad_options_are_one_line_errors_before_any_training(
    ablation, tmp_path, capsys, monkeypatch, options, message
):
    """Usage errors, found before training: a file as --output-dir must not fail only when the results are
    written, after the whole run (about 20 minutes)."""
    monkeypatch.setattr(ablation, "write_results", lambda *args: pytest.fail("the ablation ran"))
    file = tmp_path / "results.md"
    file.write_text("")
    argv = ["--quick", "--output-dir", str(tmp_path / "out"), *options]
    with pytest.raises(SystemExit) as stopped:
        ablation.main([arg.format(file=file) for arg in argv])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f" error: {message.format(file=file)}")


@pytest.mark.slow
def test_quick_ablation_trains_every_row_with_its_switches(ablation, tmp_path):
    """1 seed, a few steps per row (< 30 s on 2 CPU cores): every row's trained model has the row's switches
    (the script reads them back from its config and stops otherwise), the figures land in Table 2's layout."""
    argv = ["--output-dir", str(tmp_path), "--quick", "--machine", "a test machine"]
    assert ablation.main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["rows"]) == list("abcde")
    keys = [key for _, key in ablation.COLUMNS]
    for row, entry in results["rows"].items():
        assert entry["switches"] == ablation.ROWS[row]
        (run,) = entry["runs"]
        assert run["seed"] == 0 and list(run["metrics"]) == keys
        assert all(0.0 <= value <= 100.0 for value in run["metrics"].values())
        assert entry["summary"] == {key: {"mean": run["metrics"][key], "std": None} for key in keys}
    # the switches change the model: not every row scores the same
    assert len({tuple(entry["runs"][0]["metrics"].values()) for entry in results["rows"].values()}) > 1

    markdown = (tmp_path / "results.md").read_text()
    assert "Not a reproduction" in markdown and "a test machine" in markdown
    assert results["command"] == shlex.join(["python", "scripts/ablation.py", *argv])
    assert f"`{results['command']}`" in markdown
    for row, entry in results["rows"].items():
        line = next(line for line in markdown.splitlines() if line.startswith(f"| ({row}) | "))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1:5] == ["✓" if on else "" for on in entry["switches"].values()]
        assert cells[5:] == [f"{entry['runs'][0]['metrics'][key]:.1f}" for key in keys]
