"""Recipes: the paper's values, command-line overrides and the errors for bad keys and values."""

import pytest
import yaml

from sgdetr_hf.commands.train import model_config_keys
from sgdetr_hf.training.recipe import (
    DATASET_MAIN_METRICS,
    available_recipes,
    load_recipe,
    parse_override_tokens,
    save_recipe,
)

PAPER_RECIPES = {
    # name: (epochs, global batch, milestones in epochs, main metric)  -- paper §4.4
    "qvhighlights": (150, 128, [100, 125], "MR-full-mAP"),
    "charades_sta": (100, 64, [67, 83], "MR-full-R1@0.7"),
    "tacos": (120, 32, [80, 100], "MR-full-R1@0.7"),
    "intervid_mr": (30, 128, [20, 25], "MR-full-mAP"),
}


def test_every_dataset_has_a_recipe():
    assert set(available_recipes()) == {
        "qvhighlights", "charades_sta", "tacos", "intervid_mr", "youtube_highlights", "tvsum", "demo",
        "qvhighlights_clip_slowfast", "charades_sta_clip_slowfast", "tacos_clip_slowfast",
    }  # fmt: skip
    for name in available_recipes():
        recipe = load_recipe(name, valid_model_keys=model_config_keys())
        assert recipe.name == name
        assert recipe.main_metric == DATASET_MAIN_METRICS[recipe.dataset_name]


@pytest.mark.parametrize("name", sorted(PAPER_RECIPES))
def test_paper_hyper_parameters(name):
    epochs, batch, milestones, metric = PAPER_RECIPES[name]
    recipe = load_recipe(name)
    assert (recipe.epochs, recipe.batch_size, recipe.milestones, recipe.main_metric) == (
        epochs,
        batch,
        milestones,
        metric,
    )
    # Common to all (paper §4.4).
    assert recipe.learning_rate == 5e-4
    assert recipe.weight_decay == 0.1
    assert (recipe.warmup_iters, recipe.warmup_factor, recipe.gamma) == (45, 0.001, 0.5)
    assert recipe.max_grad_norm == 0.1


def test_dataset_specific_settings():
    assert load_recipe("charades_sta").model["clip_length"] == 1.0
    assert load_recipe("charades_sta").eval_split == "test" and not load_recipe("charades_sta").select_best
    assert load_recipe("qvhighlights").model["max_num_clips"] == 75
    assert not load_recipe("intervid_mr").select_best  # never selected on a target benchmark
    assert (load_recipe("tvsum").learning_rate, load_recipe("tvsum").batch_size) == (1e-3, 4)
    assert load_recipe("youtube_highlights").model["use_negative_pairs"] is False


def test_overrides_both_styles_and_yaml_values():
    tokens = ["--epochs", "3", "--set", "batch_size=8", "seed=7", "--milestones", "[2, 3]", "--learning-rate=1e-3",
              "--model.hidden_size", "64", "--select_best"]  # fmt: skip
    recipe = load_recipe("qvhighlights", parse_override_tokens(tokens), valid_model_keys=model_config_keys())
    assert (recipe.epochs, recipe.batch_size, recipe.seed, recipe.milestones) == (3, 8, 7, [2, 3])
    assert recipe.learning_rate == 1e-3 and isinstance(recipe.learning_rate, float)
    assert recipe.model == {
        "clip_length": 2.0,
        "max_num_clips": 75,
        "hidden_size": 64,
    }
    assert recipe.select_best is True and recipe.window_round_seconds == 2.0


def test_int_given_for_a_float_is_accepted_and_null_clears():
    recipe = load_recipe("qvhighlights", {"learning_rate": 1, "eval_split": None})
    assert recipe.learning_rate == 1.0 and isinstance(recipe.learning_rate, float)
    assert recipe.eval_split is None


def test_misspelled_key_lists_the_valid_keys():
    with pytest.raises(ValueError) as error:
        load_recipe("qvhighlights", parse_override_tokens(["--learning_rte", "1e-3"]))
    message = str(error.value)
    assert "unknown recipe key 'learning_rte'" in message
    assert "Did you mean 'learning_rate'?" in message
    assert "batch_size" in message and "warmup_iters" in message  # the list of valid keys


def test_misspelled_model_key_lists_the_config_keys():
    with pytest.raises(
        ValueError, match=r"unknown model config \(model.<key>\) key 'hiden_size'.*'hidden_size'"
    ):
        load_recipe("demo", {"model.hiden_size": 32}, valid_model_keys=model_config_keys())


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"epochs": "many"}, "epochs must be of type int"),
        ({"epochs": 1.5}, "epochs must be of type int"),
        ({"epochs": True}, "epochs must be of type int"),
        ({"milestones": 5}, "milestones must be a list"),
        ({"milestones": [10, 5]}, "milestones must be increasing"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"max_steps": -1}, "max_steps must be >= 0"),
        ({"eval_every_steps": -100}, "eval_every_steps must be >= 0"),
        (
            {"batch_size": 10, "gradient_accumulation_steps": 4},
            "must be divisible by gradient_accumulation_steps",
        ),
        ({"dataset_name": "kinetics"}, "dataset_name='kinetics' is not an evaluation protocol"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be"),
    ],
)
def test_bad_values_are_value_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_recipe("qvhighlights", overrides)


def test_unknown_recipe_and_bad_tokens():
    with pytest.raises(ValueError, match="unknown recipe 'qvh'.*qvhighlights"):
        load_recipe("qvh")
    with pytest.raises(ValueError, match="expects key=value"):
        parse_override_tokens(["--set", "epochs=3", "oops"])
    with pytest.raises(ValueError, match="unexpected argument"):
        parse_override_tokens(["epochs=3"])


def test_recipe_file_round_trip(tmp_path):
    recipe = load_recipe("tacos", {"dataset_path": "data/tacos", "epochs": 2})
    save_recipe(recipe, tmp_path / "recipe.yaml")
    again = load_recipe(str(tmp_path / "recipe.yaml"))
    assert again == recipe  # the saved file keeps the recipe's name
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text())["dataset_path"] == "data/tacos"


@pytest.mark.parametrize("name", ["qvhighlights", "charades_sta", "tacos"])
def test_clip_slowfast_recipes_are_the_dataset_schedule_on_the_public_features(name):
    base, features = load_recipe(name), load_recipe(f"{name}_clip_slowfast")
    assert {k: v for k, v in features.to_dict().items() if k not in ("name", "model")} == {
        k: v for k, v in base.to_dict().items() if k not in ("name", "model")
    }
    assert features.model == {
        **base.model,
        "video_feature_dim": 2816,  # CLIP 512 + SlowFast 2304; the model appends TEF: 2818 inputs
        "text_feature_dim": 512,
        "normalize_features": False,  # the builder L2-normalised each feature type
        "use_tef": True,
    }


def test_extends_merges_the_model_section_and_refuses_cycles(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: charades_sta\nepochs: 3\nmodel:\n  hidden_size: 64\n")
    recipe = load_recipe(str(child))
    assert (recipe.name, recipe.epochs, recipe.batch_size) == ("child", 3, 64)
    assert recipe.model == {"clip_length": 1.0, "max_num_clips": 256, "hidden_size": 64}
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\n")
    with pytest.raises(ValueError, match="extends must name another recipe, without cycles"):
        load_recipe(str(loop))
