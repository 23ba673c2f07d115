"""The metric's Hub folder (src/sgdetr_hf/metrics/sgdetr_eval/): the ``evaluate`` module equals the
plain function API, works without the sgdetr_hf package and offline; its card, Space app and the
reference-style command line of mr_hd_metrics.py."""

import json
import os
import subprocess
import sys

import pytest
from evaluate.loading import get_imports, load
from huggingface_hub import metadata_load

from metrics_testing import (
    ASCENDING,
    CHARADES_PREDICTIONS,
    CHARADES_REFERENCES,
    DESCENDING,
    QVH_REFERENCE,
    TVSUM_LABELS,
    YOUTUBE_LABELS,
    clip_scores,
    highlight_rows,
    qvh_prediction,
)
from sgdetr_hf.metrics import EVALUATE_MODULE_PATH, compute_metrics, read_jsonl
from sgdetr_hf.metrics.sgdetr_eval import mr_hd_metrics

# Runs in a fresh interpreter where importing sgdetr_hf fails, as on the Hub: loads the folder with
# evaluate.load and computes each case of stdin (keyword arguments of compute).
_EVALUATE_SCRIPT = """
import json
import sys

sys.modules["sgdetr_hf"] = None
import evaluate

metric = evaluate.load(sys.argv[1])
print(json.dumps([metric.compute(**case) for case in json.load(sys.stdin)]))
"""


def _cases():
    """(dataset, predictions, references) fixtures covering every dataset."""
    mixed = [
        qvh_prediction(
            [[40, 80, 0.9], [40, 80, 0.8], [0, 10, 0.7]], clip_scores(75, c20=1.0, c21=1.0, c22=0.5)
        ),
    ]
    youtube = [
        ("a", "dog", YOUTUBE_LABELS, DESCENDING[:6]),
        ("b", "surfing", YOUTUBE_LABELS, [0.9, 0.1, 0.8]),
    ]
    tvsum = [("a", "VT", TVSUM_LABELS, DESCENDING), ("b", "BK", TVSUM_LABELS, ASCENDING)]
    return [
        ("qvhighlights", mixed, [QVH_REFERENCE]),
        ("charades_sta", CHARADES_PREDICTIONS, CHARADES_REFERENCES),
        ("tacos", CHARADES_PREDICTIONS, CHARADES_REFERENCES),
        ("youtube_highlights", *highlight_rows(youtube)),
        ("tvsum", *highlight_rows(tvsum)),
    ]


def test_evaluate_module_equals_function_api_without_the_package(tmp_path):
    cases = [{"predictions": p, "references": r, "dataset": d} for d, p, r in _cases()]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _EVALUATE_SCRIPT, str(EVALUATE_MODULE_PATH)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [compute_metrics(d, p, r) for d, p, r in _cases()]


def test_evaluate_module_reproduces_the_official_sample(shared_data, tmp_path):
    # In this process (the test above shows the module needs no sgdetr_hf); rows passed as read.
    conformance = shared_data / "qvhighlights_eval_conformance"
    predictions = read_jsonl(conformance / "sample_val_preds.jsonl")
    references = read_jsonl(shared_data / "qvhighlights" / "highlight_val_release.jsonl")
    metric = load(str(EVALUATE_MODULE_PATH), cache_dir=str(tmp_path))
    expected = json.loads((conformance / "sample_val_preds_metrics_raw.json").read_text())
    assert metric.compute(predictions=predictions, references=references) == expected
    # add() row by row gives the numbers of the function API
    by_qid = {row["qid"]: row for row in references}
    for prediction in predictions[:50]:
        metric.add(prediction=prediction, reference=by_qid[prediction["qid"]])
    subset = [by_qid[row["qid"]] for row in predictions[:50]]
    assert metric.compute() == compute_metrics("qvhighlights", predictions[:50], subset)


def test_evaluate_module_imports_one_module_per_line():
    # evaluate finds dependencies by scanning import lines and copies relative imports beside the module.
    # A comment after an import would be read as the package's install path: the third field.
    imports = get_imports(str(EVALUATE_MODULE_PATH / "sgdetr_eval.py"))
    assert {(kind, name, path) for kind, name, path, _ in imports} == {
        ("library", "datasets", "datasets"),
        ("library", "evaluate", "evaluate"),
        ("internal", "mr_hd_metrics", "mr_hd_metrics"),
    }


def test_card_metadata_and_sections():
    card = EVALUATE_MODULE_PATH / "README.md"
    metadata = metadata_load(card)
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py"
    assert {"evaluate", "metric"} <= set(metadata["tags"])
    assert "QVHighlights" in metadata["description"]
    text = card.read_text()
    for section in ("## Metric description", "### Inputs", "### Output values", "## Citation"):
        assert section in text
    assert (EVALUATE_MODULE_PATH / "requirements.txt").read_text().split() == ["numpy>=2"]


@pytest.fixture
def space_app(monkeypatch):
    """app.py imported as the Space runs it: from its own folder, with absolute imports."""
    monkeypatch.syspath_prepend(str(EVALUATE_MODULE_PATH))
    flat_modules = ("app", "mr_hd_metrics")
    for name in flat_modules:
        monkeypatch.delitem(sys.modules, name, raising=False)
    import app

    yield app
    for name in flat_modules:
        sys.modules.pop(name, None)


def test_space_app_function(space_app):
    text = "\n".join(json.dumps(row) for row in CHARADES_PREDICTIONS)
    references = "\n".join(json.dumps(row) for row in CHARADES_REFERENCES)
    assert space_app.evaluate_text("charades_sta", text, references) == compute_metrics(
        "charades_sta", CHARADES_PREDICTIONS, CHARADES_REFERENCES
    )
    example = space_app.evaluate_text(
        "qvhighlights", space_app._EXAMPLE_PREDICTIONS, space_app._EXAMPLE_REFERENCES
    )
    assert example["brief"]["MR-full-mAP"] == 100.0 and example["brief"]["HL-min-VeryGood-mAP"] == 66.67
    with pytest.raises(ValueError, match="predictions:2: not valid JSON"):
        space_app.evaluate_text("charades_sta", text.replace("\n", "\n{", 1), references)


@pytest.mark.slow
def test_space_app_builds_with_gradio(space_app):
    pytest.importorskip("gradio")
    demo = space_app.build_demo()
    assert type(demo).__name__ == "Interface"


def test_reference_style_command_line(tmp_path, capsys):
    predictions, references = tmp_path / "preds.jsonl", tmp_path / "gt.jsonl"
    predictions.write_text("\n".join(json.dumps(row) for row in CHARADES_PREDICTIONS))
    references.write_text("\n".join(json.dumps(row) for row in CHARADES_REFERENCES) + "\n")
    output = tmp_path / "metrics.json"
    args = ["--submission_path", str(predictions), "--gt_path", str(references), "--save_path", str(output)]
    assert mr_hd_metrics.main([*args, "--dataset", "charades_sta"]) == 0
    expected = compute_metrics("charades_sta", read_jsonl(predictions), read_jsonl(references))
    assert json.loads(output.read_text()) == expected == json.loads(capsys.readouterr().out)
    # Invalid input (here with the default dataset, qvhighlights): exit status 1, the reason on stderr.
    references.write_text(json.dumps({**CHARADES_REFERENCES[0], "qid": 99}) + "\n")
    assert mr_hd_metrics.main(args) == 1
    assert "qid 10 is not annotated" in capsys.readouterr().err
