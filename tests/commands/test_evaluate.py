"""``sgdetr evaluate``: table on stdout, metrics JSON written atomically, clear errors."""

import argparse
import json
import logging
import subprocess
import sys

import pytest

from metrics_testing import CHARADES_PREDICTIONS, CHARADES_REFERENCES, QVH_REFERENCE, qvh_prediction
from sgdetr_hf.commands import COMMANDS
from sgdetr_hf.commands import evaluate as evaluate_command
from sgdetr_hf.metrics import compute_metrics


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def run_evaluate(*argv):
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    return evaluate_command.run(parser.parse_args(argv))


def test_evaluate_prints_table_and_writes_json(tmp_path, capsys):
    predictions = write_jsonl(tmp_path / "preds.jsonl", CHARADES_PREDICTIONS)
    annotations = write_jsonl(tmp_path / "gt.jsonl", CHARADES_REFERENCES)
    output = tmp_path / "results" / "metrics.json"
    code = run_evaluate(
        "--predictions",
        predictions,
        "--annotations",
        annotations,
        "--dataset",
        "charades_sta",
        "--output",
        str(output),
    )
    assert code == 0
    metrics = compute_metrics("charades_sta", CHARADES_PREDICTIONS, CHARADES_REFERENCES)
    assert json.loads(output.read_text()) == metrics
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["metric", "value"]
    assert table[2].split() == ["MR-full-R1@0.3", "75.00"] and table[-1].split() == ["MR-full-mIoU", "44.52"]
    assert len(table) == 2 + len(metrics["brief"])


def test_evaluate_errors_name_the_file_and_line(tmp_path, caplog, capsys):
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text(json.dumps(qvh_prediction([[0, 10, 1.0]])) + "\n{not json}\n")
    annotations = write_jsonl(tmp_path / "gt.jsonl", [QVH_REFERENCE])
    output = tmp_path / "metrics.json"
    args = ("--predictions", str(predictions), "--annotations", annotations, "--dataset", "qvhighlights")
    with caplog.at_level(logging.ERROR):
        assert run_evaluate(*args, "--output", str(output)) == 1
    assert f"{predictions}:2: not valid JSON" in caplog.text
    assert not output.exists() and capsys.readouterr().out == ""

    write_jsonl(predictions, [qvh_prediction([[0, 10]])])
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert run_evaluate(*args) == 1
    assert "prediction row 1 (qid 1): 'pred_relevant_windows' entry 0 is [0, 10]" in caplog.text
    with pytest.raises(SystemExit):  # argparse refuses an unknown dataset name
        run_evaluate("--predictions", "p", "--annotations", "g", "--dataset", "activitynet")


def test_evaluate_is_a_sgdetr_command():
    module, help_text = COMMANDS["evaluate"]
    assert module == "sgdetr_hf.commands.evaluate" and help_text


HEAVY_MODULES = ("torch", "transformers", "accelerate", "datasets", "matplotlib")


def test_sgdetr_evaluate_imports_neither_torch_nor_transformers(tmp_path):
    """``sgdetr evaluate`` (and its ``--help``) must cost what the numpy-only metric script costs: a fresh
    interpreter runs the command and reports which heavy modules it imported."""
    predictions = write_jsonl(tmp_path / "preds.jsonl", CHARADES_PREDICTIONS)
    annotations = write_jsonl(tmp_path / "gt.jsonl", CHARADES_REFERENCES)
    script = (
        "import contextlib, io, json, sys\n"
        "from sgdetr_hf.commands import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    code = main(sys.argv[1:])\n"
        "    try:\n"
        "        main(['evaluate', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(json.dumps([code, [name for name in {HEAVY_MODULES!r} if name in sys.modules]]))\n"
    )
    argv = ["--predictions", predictions, "--annotations", annotations, "--dataset", "charades_sta"]
    done = subprocess.run(
        [sys.executable, "-c", script, "evaluate", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == [0, []]
