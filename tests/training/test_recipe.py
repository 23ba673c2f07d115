"""Recipes: the paper's values, command-line overrides and the errors for bad keys and values."""

import math

import pytest
import yaml

from metrics_testing import (
    CHARADES_PREDICTIONS,
    CHARADES_REFERENCES,
    DESCENDING,
    QVH_REFERENCE,
    TVSUM_LABELS,
    YOUTUBE_LABELS,
    highlight_rows,
    qvh_prediction,
)
from sgdetr_hf.commands.train import model_config_keys
from sgdetr_hf.metrics import TVSUM_DOMAINS, YOUTUBE_DOMAINS, compute_metrics
from sgdetr_hf.training.recipe import (
    DATASET_MAIN_METRICS,
    RESUME_FREE_KEYS,
    TrainingRecipe,
    available_recipes,
    brief_metric_names,
    load_recipe,
    parse_override_tokens,
    recipe_differences,
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
        # before: each of these failed only after the first epoch, at the first steps, at the first checkpoint
        # (inf is not JSON) or never (NaN clipping silently off), or with numpy's message (seed)
        (
            {"main_metric": "MR-full-map"},
            "main_metric='MR-full-map' is not a qvhighlights metric.*'MR-full-mAP'",
        ),
        ({"dataset_name": "tvsum", "main_metric": "MR-full-mAP"}, "is not a tvsum metric.*'TVSum-top5-mAP'"),
        ({"eval_top_k": 0}, "eval_top_k must be >= 1, got 0"),
        ({"window_round_seconds": 0}, "window_round_seconds must be > 0 .* or null for no rounding; got 0"),
        ({"window_round_seconds": -2}, "window_round_seconds must be > 0"),
        ({"window_round_seconds": math.inf}, "window_round_seconds must be a finite number, got inf"),
        ({"learning_rate": math.inf}, "learning_rate must be a finite number, got inf"),
        ({"learning_rate": math.nan}, "learning_rate must be a finite number, got nan"),
        ({"learning_rate": 1e10}, "learning_rate must be <= 1"),
        ({"gamma": math.inf}, "gamma must be a finite number, got inf"),
        ({"warmup_factor": math.nan}, "warmup_factor must be a finite number"),
        ({"weight_decay": math.nan}, "weight_decay must be a finite number"),
        ({"max_grad_norm": math.nan}, "max_grad_norm must be a finite number, got nan"),
        ({"max_grad_norm": -1}, "max_grad_norm must be > 0 .*, or 0 for no clipping"),
        ({"max_train_samples": 0}, "max_train_samples must be >= 1 .*, got 0"),
        ({"max_train_samples": -3}, "max_train_samples must be >= 1"),
        ({"max_eval_samples": 0}, "max_eval_samples must be >= 1"),
        ({"max_query_tokens": 0}, "max_query_tokens must be >= 1"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*32 - 1\] \(numpy's seed range\), got -1"),
        ({"seed": 2**32}, "seed must be in"),
        ({"adam_beta1": 1}, r"adam_beta1 must be in \[0, 1\), got 1.0"),
        ({"adam_beta2": -0.1}, "adam_beta2 must be in"),
        ({"adam_epsilon": -1e-8}, "adam_epsilon must be >= 0"),
        ({"model.dropout": math.inf}, "model.dropout must be a finite number"),
    ],
)
def test_bad_values_are_value_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_recipe("qvhighlights", overrides)


def test_boundary_and_off_values_are_accepted():
    recipe = load_recipe(
        "qvhighlights",
        {"max_grad_norm": 0, "window_round_seconds": None, "seed": 2**32 - 1, "adam_beta1": 0,
         "adam_epsilon": 0, "learning_rate": 1, "max_train_samples": 1, "main_metric": "HL-min-VeryGood-Hit1"},
    )  # fmt: skip
    assert (recipe.max_grad_norm, recipe.window_round_seconds, recipe.seed) == (0.0, None, 2**32 - 1)


def test_main_metric_left_out_is_the_dataset_s():
    """Also for a recipe built in Python: TrainingRecipe(dataset_name="tvsum") used to select by MR-full-mAP,
    which TVSum does not report."""
    for dataset_name, metric in DATASET_MAIN_METRICS.items():
        assert TrainingRecipe(dataset_name=dataset_name).main_metric == metric
        assert metric in brief_metric_names(dataset_name)


def test_brief_metric_names_are_what_the_metrics_report():
    """brief_metric_names mirrors the evaluators' names: every protocol, on inputs that report them all."""
    windows = [[0, 10, 0.9], [40, 80, 0.8], [130, 150, 0.7]]
    qvhighlights = compute_metrics(
        "qvhighlights", [qvh_prediction(windows, [0.5] * 75)], [QVH_REFERENCE]
    )  # fmt: skip
    assert sorted(qvhighlights["brief"]) == sorted(brief_metric_names("qvhighlights"))
    for name in ("charades_sta", "tacos"):
        reported = compute_metrics(name, CHARADES_PREDICTIONS, CHARADES_REFERENCES)["brief"]
        assert sorted(reported) == sorted(brief_metric_names(name))
    for name, domains, labels in (
        ("youtube_highlights", YOUTUBE_DOMAINS, YOUTUBE_LABELS),
        ("tvsum", TVSUM_DOMAINS, TVSUM_LABELS),
    ):
        videos = [(f"v{i}", domain, labels, DESCENDING[: len(labels)]) for i, domain in enumerate(domains)]
        reported = compute_metrics(name, *highlight_rows(videos))["brief"]
        assert sorted(reported) == sorted(brief_metric_names(name))


def test_recipe_differences_leave_out_what_cannot_change_the_run():
    recorded = load_recipe("demo", {"dataset_path": "data", "model.dropout": 0.2}).to_dict()
    free = {"output_dir": "elsewhere", "logging_steps": 1, "num_workers": 2, "save_every_steps": 3,
            "checkpoints_total_limit": 9, "retain_cpu_memory": False, "name": "renamed"}  # fmt: skip
    assert set(free) == RESUME_FREE_KEYS
    assert (
        recipe_differences(
            recorded, load_recipe("demo", {**free, "dataset_path": "data", "model.dropout": 0.2})
        )
        == []
    )
    changed = load_recipe(
        "demo", {"dataset_path": "data", "learning_rate": 0.1, "model.ffn_dim": 64, "eval_every_epochs": 1}
    )
    assert recipe_differences(recorded, changed) == [
        "learning_rate: 0.001 (run) -> 0.1",
        "eval_every_epochs: 2 (run) -> 1",
        "model.dropout: 0.2 (run) -> (not set)",
        "model.ffn_dim: 128 (run) -> 64",
    ]
    # a key recorded before it existed had its default
    older = {k: v for k, v in recorded.items() if k != "retain_cpu_memory" and k != "torch_compile"}
    assert (
        recipe_differences(older, load_recipe("demo", {"dataset_path": "data", "model.dropout": 0.2})) == []
    )
    assert recipe_differences(
        older, load_recipe("demo", {"dataset_path": "data", "model.dropout": 0.2, "torch_compile": True})
    ) == ["torch_compile: False (run) -> True"]


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


def test_recipe_differences_see_one_folder_written_two_ways(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    recorded = load_recipe("demo", {"dataset_path": "data"}).to_dict()
    assert recipe_differences(recorded, load_recipe("demo", {"dataset_path": str(tmp_path / "data")})) == []
    assert recipe_differences(recorded, load_recipe("demo", {"dataset_path": "other"})) == [
        "dataset_path: 'data' (run) -> 'other'"
    ]
    hub = load_recipe("demo", {"dataset_path": "owner/name"}).to_dict()  # no local folder: compared as text
    assert recipe_differences(hub, load_recipe("demo", {"dataset_path": "owner/other"})) != []
