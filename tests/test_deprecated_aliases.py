"""Moved names keep working for one release: the old path warns with FutureWarning, once, and gives the
same object as the new one."""

import importlib
import sys
import warnings

import pytest

import sgdetr_hf
from sgdetr_hf import files
from sgdetr_hf.commands import main

#: old module -> new module: the old name is the new module itself
MOVED_MODULES = {
    "sgdetr_hf.cli": "sgdetr_hf.commands",
    "sgdetr_hf.predict": "sgdetr_hf.commands.predict",
    "sgdetr_hf.demo": "sgdetr_hf.commands.demo",
    "sgdetr_hf.extract_features": "sgdetr_hf.commands.extract_features",
    "sgdetr_hf.convert_internvideo2": "sgdetr_hf.commands.convert_internvideo2",
}
#: (old module, name there, new module, name there) for shim modules that re-export names
MOVED_NAMES = [
    ("sgdetr_hf.training.files", "atomic_write_bytes", "sgdetr_hf.files", "atomic_write_bytes"),
    ("sgdetr_hf.training.files", "atomic_write_text", "sgdetr_hf.files", "atomic_write_text"),
    ("sgdetr_hf.training.files", "atomic_write_json", "sgdetr_hf.files", "atomic_write_json"),
    ("sgdetr_hf.training.commands", "model_config_keys", "sgdetr_hf.commands.train", "model_config_keys"),
    ("sgdetr_hf.metrics.cli", "add_arguments", "sgdetr_hf.commands.evaluate", "add_arguments"),
    ("sgdetr_hf.metrics.cli", "run", "sgdetr_hf.commands.evaluate", "run"),
    ("sgdetr_hf.metrics.cli", "format_table", "sgdetr_hf.metrics", "format_metrics_table"),
    ("sgdetr_hf.publishing", "DEFAULT_MODEL_REPO", "sgdetr_hf.hub_ids", "DEFAULT_MODEL_REPO"),
]
#: names that left a module which stays: its ``__getattr__`` answers for them
MOVED_ATTRIBUTES = [
    ("sgdetr_hf.training.evaluation", "format_metrics_table", "sgdetr_hf.metrics", "format_metrics_table"),
    ("sgdetr_hf.data.builder", "write_text_atomic", "sgdetr_hf.files", "atomic_write_text"),
]


def import_fresh(name: str):
    """Import ``name`` as if for the first time, expecting the deprecation warning."""
    sys.modules.pop(name, None)
    with pytest.warns(FutureWarning, match="moved to .*removed in the next release"):
        return importlib.import_module(name)


@pytest.mark.parametrize("old, new", sorted(MOVED_MODULES.items()))
def test_moved_module_is_the_new_module(old, new):
    assert import_fresh(old) is importlib.import_module(new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: a second import is silent
        assert importlib.import_module(old) is importlib.import_module(new)


@pytest.mark.parametrize("old, name, new, new_name", MOVED_NAMES)
def test_moved_names_are_the_new_objects(old, name, new, new_name):
    assert getattr(import_fresh(old), name) is getattr(importlib.import_module(new), new_name)


@pytest.mark.parametrize("old, name, new, new_name", MOVED_ATTRIBUTES)
def test_moved_attributes_warn_once(old, name, new, new_name, monkeypatch):
    module = importlib.import_module(old)
    monkeypatch.delitem(vars(module), name, raising=False)  # as before its first use
    with pytest.warns(FutureWarning, match=f"{old}.{name} moved to {new}.{new_name}"):
        assert getattr(module, name) is getattr(importlib.import_module(new), new_name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(module, name) is getattr(importlib.import_module(new), new_name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018


def test_package_level_names_did_not_move():
    assert sgdetr_hf.write_qvhighlights_predictions is files.write_qvhighlights_predictions
    assert sgdetr_hf.SGDetrProcessor.post_process_moment_retrieval  # the processor method beside the function


def test_old_training_entry_points_run_the_commands(capsys):
    old = import_fresh("sgdetr_hf.training.commands")
    assert old.train_main(["--recipe", "demo", "--print-recipe"]) == 0
    printed = capsys.readouterr().out
    assert main(["train", "--recipe", "demo", "--print-recipe"]) == 0
    assert printed == capsys.readouterr().out and "dataset_name:" in printed
    args, overrides = old.build_train_parser().parse_known_args(["--recipe", "demo", "--epochs", "3"])
    assert args.recipe == "demo" and overrides == ["--epochs", "3"]
    assert (
        old.build_evaluate_parser().parse_args(["--model", "m", "--dataset", "d", "--output-dir", "o"]).top_k
        == 10
    )
    with pytest.raises(SystemExit) as exit_info:
        old.evaluate_main(["--model", "no-recipe-here", "--dataset", "d", "--output-dir", "o"])
    assert exit_info.value.code == 2 and "--dataset-config is required" in capsys.readouterr().err


def test_old_publishing_module_reaches_the_release_code_of_the_checkout(monkeypatch):
    old = import_fresh("sgdetr_hf.publishing")
    card = str(old.render_model_card(repo_id="org/sg-detr-x"))
    assert card.startswith("---") and "org/sg-detr-x" in card
    assert old.build_model_repo.__module__ == "sgdetr_hf._release_publishing"
    # an installation without the checkout says where the code went
    monkeypatch.setattr(old, "_SCRIPT", old._SCRIPT.with_name("missing.py"))
    monkeypatch.setattr(old, "_release", None)
    with pytest.raises(AttributeError, match="moved to scripts/publishing.py of the source checkout"):
        old.upload_repo  # noqa: B018
