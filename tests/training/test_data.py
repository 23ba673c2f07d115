"""Loading a split for training: the needed columns, domain / size selection, and model-config checks."""

import datasets
import pytest

from sgdetr_hf.data.demo import build_demo_dataset
from sgdetr_hf.training.data import check_matches_data, dataset_properties, load_split
from sgdetr_hf.training.recipe import load_recipe

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
