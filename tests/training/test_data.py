"""Loading a split for training: the needed columns, domain / size selection, and model-config checks."""

import json
import re

import datasets
import pytest

from sgdetr_hf.data.demo import DEMO_ANNOTATIONS, build_demo_dataset
from sgdetr_hf.training.data import check_matches_data, dataset_properties, load_split
from sgdetr_hf.training.errors import RunInputError
from sgdetr_hf.training.recipe import load_recipe
from sgdetr_hf.training.trainer import Trainer

CARD = """---
configs:
- config_name: demo
  data_files:
  - split: validation
    path: demo/validation-*
- config_name: demo-features
  data_files:
  - split: validation
    path: demo-features/validation-*
---
"""


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    build_demo_dataset(folder, num_train=4, num_validation=5)
    return folder


def test_load_split_and_its_properties(demo_data):
    recipe = load_recipe("demo", {"dataset_path": str(demo_data)})
    dataset = load_split(recipe, "validation", max_samples=3)
    assert len(dataset) == 3
    assert dataset_properties(dataset) == {
        "video_feature_dim": 64,
        "text_feature_dim": 64,
        "clip_length": 2.0,
    }


def test_a_missing_column_is_named(demo_data, tmp_path):
    # The same validation split without its saliency annotations.
    for config in ("demo", "demo-features"):
        table = datasets.load_dataset(str(demo_data), config, split="validation")
        if config == "demo":
            table = table.remove_columns("saliency_scores")
        table.to_parquet(str(tmp_path / config / "validation-00000-of-00001.parquet"))
    (tmp_path / "README.md").write_text(CARD)
    recipe = load_recipe("demo", {"dataset_path": str(tmp_path)})
    with pytest.raises(
        ValueError, match=r"config 'demo' split 'validation' lacks the column\(s\) \['saliency_scores'\]"
    ):
        load_split(recipe, "validation")


def test_no_dataset_path_and_empty_domain(demo_data):
    with pytest.raises(ValueError, match="recipe 'qvhighlights' has no dataset_path: pass --dataset_path"):
        load_split(load_recipe("qvhighlights"), "validation")
    recipe = load_recipe("demo", {"dataset_path": str(demo_data), "domain": "dog"})
    with pytest.raises(ValueError, match="has no rows \\(domain='dog'\\)"):
        load_split(recipe, "validation")


def test_model_config_contradicting_the_data():
    properties = {"video_feature_dim": 64, "text_feature_dim": 64, "clip_length": 2.0}
    check_matches_data({"clip_length": 2, "hidden_size": 32}, properties, "model")  # consistent: no error
    with pytest.raises(ValueError, match=r"model does not fit the dataset: clip_length=1.0 \(dataset: 2.0\)"):
        check_matches_data({"clip_length": 1.0}, properties, "model")


def test_an_evaluation_split_sharing_a_training_video_is_refused(tmp_path):
    """before: a validation query on a training video was scored (and the best model selected) without a word"""
    records = [json.loads(line) for line in DEMO_ANNOTATIONS.read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"][:4]
    validation = [r for r in records if r["split"] == "validation"][:2]
    # another 150 s window of the first training video's source video
    vid = train[0]["vid"].rsplit("_", 2)[0] + "_0.0_150.0"
    leaked = dict(train[0], qid=10**6, vid=vid, split="validation", query="a query on a training video")
    annotations = tmp_path / "annotations.jsonl"
    annotations.write_text("".join(json.dumps(r) + "\n" for r in [*train, *validation, leaked]))
    build_demo_dataset(tmp_path / "data", annotations=annotations)
    recipe = load_recipe("demo", {"dataset_path": str(tmp_path / "data"), "output_dir": str(tmp_path / "run"),
                                  "batch_size": 4, "model.hidden_size": 32, "model.ffn_dim": 64})  # fmt: skip
    source = train[0]["vid"].rsplit("_", 2)[0]
    message = (
        f"1 source video(s) of dataset {str(tmp_path / 'data')!r} are in both split 'train' and split "
        f"'validation', e.g. [{source!r}]: the evaluation would score videos the model trains on"
    )
    with pytest.raises(RunInputError, match=re.escape(message)):
        Trainer(recipe)
    recipe.eval_split = "train"  # a deliberate look at the fit on the training data
    assert Trainer(recipe).eval_set is not None
