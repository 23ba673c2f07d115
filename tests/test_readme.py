"""The README's snippets run as written: every ```python block executes (its placeholders -- model ids, files
-- swapped for tiny local stand-ins), and its ``sgdetr`` commands run."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from internvideo2_testing import write_video
from metrics_testing import DESCENDING, QVH_REFERENCE, TVSUM_LABELS, highlight_rows, qvh_prediction
from pipeline_testing import save_tiny_model_repo
from sgdetr_hf.data import build_demo_dataset

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
BASH_LINES = [
    line.strip()
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    for line in block.replace("\\\n", " ").splitlines()
]
SGDETR_LINES = [line.split("#", 1)[0].strip() for line in BASH_LINES if line.startswith("sgdetr ")]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Placeholder of the README -> a tiny local file or folder that plays its part."""
    root = tmp_path_factory.mktemp("readme")
    repo = save_tiny_model_repo(root / "repo")  # SG-DETR + tiny InternVideo2 in encoder/, 16-d features
    torch.manual_seed(0)
    wide = root / "wide"  # the README's first snippet feeds 512-d features
    save_tiny_model_repo(wide, video_feature_dim=512, text_feature_dim=512)
    build_demo_dataset(root / "demo", num_train=8, num_validation=4)
    predictions = root / "preds.jsonl"
    predictions.write_text(json.dumps(qvh_prediction([[0, 10, 0.9], [40, 70, 0.5]], list(range(75)))) + "\n")
    annotations = root / "highlight_val_release.jsonl"
    annotations.write_text(json.dumps(QVH_REFERENCE) + "\n")
    video = write_video(root / "video.mp4", num_frames=48, fps=8, size=(32, 32))
    return {
        "path/or/hub-id": str(wide),
        "ORG/sg-detr-qvhighlights": str(repo),
        "internvideo2-stage2-1b": str(repo / "encoder"),
        "video.mp4": str(video),
        "data/qvhighlights": str(root / "demo"),
        '"qvhighlights", "train"': '"demo", "train"',
        "preds.jsonl": str(predictions),
        "highlight_val_release.jsonl": str(annotations),
        "DIR_OR_ID": str(repo),
    }


def run_block(block: str, stand_ins: dict[str, str], **names) -> dict:
    for placeholder, stand_in in stand_ins.items():
        block = block.replace(placeholder, stand_in)
    namespace = dict(names)
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    return namespace


def block_with(text: str) -> str:
    (block,) = [block for block in PYTHON_BLOCKS if text in block]
    return block


def test_every_python_block_is_run_below():
    tested = (
        "AutoModel.from_pretrained",
        "pipeline(model=",
        "SGDetrFeatureExtractor",
        "load_moment_retrieval",
    )
    tested += ("compute_metrics(", "evaluate.load(")
    assert all(any(text in block for text in tested) for block in PYTHON_BLOCKS), (
        "a new README block: test it"
    )


def test_features_in_windows_out(stand_ins):
    names = run_block(block_with("AutoModel.from_pretrained"), stand_ins)
    (prediction,) = names["predictions"]
    windows = prediction["pred_relevant_windows"]
    assert len(windows) == 10 and all(0 <= start < end <= 150 for start, end, _ in windows)
    assert len(prediction["pred_saliency_scores"]) == 75


def test_the_pipeline_from_a_folder_the_model_saved(stand_ins):
    """The folder is what ``SGDetrForMomentRetrieval.save_pretrained`` wrote (plus the encoder), not a Hub build."""
    names = run_block(
        block_with("pipeline(model="), stand_ins, feats=np.random.rand(20, 16).astype("float32")
    )
    from_video = names["retriever"](
        stand_ins["video.mp4"], queries=["a man rides a bike", "a dog runs"], top_k=5
    )
    assert [answer["query"] for answer in from_video] == ["a man rides a bike", "a dog runs"]
    assert all(1 <= len(answer["pred_relevant_windows"]) <= 5 for answer in from_video)


def test_the_feature_extractor(stand_ins):
    inputs = run_block(block_with("SGDetrFeatureExtractor"), stand_ins)["inputs"]
    assert inputs["video_features"].shape[-1] == inputs["text_features"].shape[-1] == 16
    assert inputs["text_features"].shape[0] == 2


def test_the_data_loader(stand_ins):
    names = run_block(block_with("load_moment_retrieval"), stand_ins)
    assert len(names["ds"]) == 8 and names["loader"].batch_size == 32


def test_the_metrics(stand_ins):
    names = run_block(block_with("compute_metrics("), stand_ins)
    assert names["metrics"]["brief"]["MR-full-mAP"] == pytest.approx(
        names["compute_metrics"](
            "qvhighlights", [qvh_prediction([[0, 10, 0.9], [40, 70, 0.5]])], [QVH_REFERENCE]
        )["brief"]["MR-full-mAP"]
    )


def test_the_evaluate_module():
    predictions, references = highlight_rows([(1, "BK", TVSUM_LABELS, DESCENDING)])
    block = block_with("evaluate.load(").replace("metric.compute(", "result = metric.compute(")
    result = run_block(block, {}, prediction_rows=predictions, annotation_rows=references)["result"]
    assert 0 <= result["brief"]["TVSum-top5-mAP"] <= 100


@pytest.fixture(scope="module")
def command_folder(tmp_path_factory):
    """One working folder for the README's commands, run in order (a later one may use an earlier's output)."""
    return tmp_path_factory.mktemp("commands")


@pytest.mark.parametrize("line", SGDETR_LINES)
def test_the_sgdetr_commands(line, stand_ins, command_folder):
    tmp_path = command_folder
    for placeholder, stand_in in stand_ins.items():
        line = line.replace(placeholder, stand_in)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sgdetr_hf.commands import main; sys.exit(main())",
            *shlex.split(line)[1:],
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for output in re.findall(r"--(?:json|plot|output) (\S+)", line):
        assert (tmp_path / output).stat().st_size > 0
