"""Publishing: the model card, the repository folders, the upload plan, and the upload calls (mocked)."""

import json
import re
import shutil
import sys
from importlib.metadata import requires
from unittest import mock

import pytest
from huggingface_hub import HfApi, ModelCard, SpaceCard
from release_scripts import load_script, publishing
from transformers.dynamic_module_utils import get_imports


@pytest.fixture(scope="module")
def push_script():
    return load_script("push_to_hub")


@pytest.fixture
def no_hub_calls(monkeypatch):
    """Fail loudly if anything tries to reach the Hub."""
    for name in ("create_repo", "upload_folder", "add_space_variable"):
        monkeypatch.setattr(HfApi, name, mock.Mock(side_effect=AssertionError(f"HfApi.{name} called")))


# ------------------------------------------------------------------------------------------ model card
def test_template_card_is_up_to_date():
    expected = str(publishing.render_model_card())
    current = (publishing.SOURCE_ROOT / "hub" / "model" / "README.md").read_text(encoding="utf-8")
    assert current == expected, "regenerate with: python scripts/push_to_hub.py --write-card-template"


def test_a_card_without_a_measurement_has_no_model_index_and_the_papers_numbers_in_its_prose():
    card = ModelCard(str(publishing.render_model_card(repo_id="org/sg-detr-x", space_id="org/demo")))
    data = card.data
    assert data.library_name == "transformers" and "custom_code" in data.tags
    assert data.datasets == ["sgdetr-hf/qvhighlights"] and data.pipeline_tag is None
    # before: the paper's 12 numbers were this checkpoint's model-index, even for random weights
    assert not data.eval_results and "model-index" not in str(card).split("---")[1]
    assert "| QVHighlights test (Table 3) | 72.2 | 56.6 | 73.2 | 55.8 | 54.1 | 43.76 | 69.13 |" in card.text
    assert "These numbers are **the paper's**" in card.text and "`qvhighlights` setting" in card.text
    assert "Not measured yet" in card.text and "org/sg-detr-x" in card.text and "spaces/org/demo" in card.text
    assert "{{" not in card.text  # every template variable was filled


@pytest.mark.parametrize(
    "paper_setting, datasets",
    [
        ("qvhighlights", ["sgdetr-hf/qvhighlights"]),
        ("qvhighlights-pretrained", ["sgdetr-hf/qvhighlights", "sgdetr-hf/intervid-mr"]),
        ("charades-sta", ["sgdetr-hf/charades-sta"]),
        ("tacos", ["sgdetr-hf/tacos"]),
    ],
)
def test_the_cards_datasets_are_those_of_its_training_setting(
    tiny_model_dir, tmp_path, paper_setting, datasets
):
    """A Charades-STA checkpoint's card must not say it was trained on QVHighlights and InterVid-MR."""
    repo = publishing.build_model_repo(tiny_model_dir, tmp_path / "repo", paper_setting=paper_setting)
    card = ModelCard.load(repo / "README.md")
    assert card.data.datasets == datasets
    links = next(line for line in card.text.splitlines() if line.startswith("- Feature datasets: "))
    assert (
        links
        == "- Feature datasets: "
        + ", ".join(f"[`{d}`](https://huggingface.co/datasets/{d})" for d in datasets)
        + "."
    )


def _results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(
        json.dumps(
            {
                "dataset": "QVHighlights",
                "dataset_id": "org/qvhighlights",
                "split": "validation",
                "metrics": {"MR-full-mAP": 41.2, "HL-min-VeryGood-Hit1": 60},
                "source": "scripts/evaluate.py on this checkpoint",
            }
        )
    )
    return path


def test_the_model_index_holds_only_the_measured_numbers(tmp_path):
    measured = publishing.load_measured_results(_results_file(tmp_path))
    card = ModelCard(str(publishing.render_model_card(measured=measured)))
    assert {(r.metric_name, r.metric_value, r.task_type) for r in card.data.eval_results} == {
        ("MR mAP (avg over IoU 0.5:0.95)", 41.2, "video-moment-retrieval"),
        ("HD HIT@1 (>= Very Good)", 60.0, "highlight-detection"),
    }
    assert all(r.source_name == "scripts/evaluate.py on this checkpoint" for r in card.data.eval_results)
    assert "| MR mAP (avg over IoU 0.5:0.95) | 41.20 |" in card.text and "Not measured yet" not in card.text
    assert "| 54.1 |" in card.text  # the paper's numbers stay, in the prose


def test_a_model_build_takes_the_model_index_from_the_runs_eval_results(tiny_model_dir, tmp_path):
    run = tmp_path / "best_model"
    shutil.copytree(tiny_model_dir, run)
    assert publishing.load_run_results(run) is None  # random weights: nothing measured
    brief = {"MR-full-mAP": 12.5, "MR-full-R1@0.5": 20.0, "MR-short-mAP": 3.0}
    (run / "eval_results.json").write_text(json.dumps({"brief": brief, "num_predictions": 150}))
    (run / "training_recipe.yaml").write_text("dataset_name: qvhighlights\neval_split: validation\n")
    card = ModelCard.load(publishing.build_model_repo(run, tmp_path / "out", repo_id="me/run") / "README.md")
    assert {
        (r.dataset_name, r.dataset_split, r.metric_name, r.metric_value) for r in card.data.eval_results
    } == {
        ("QVHighlights", "validation", "MR mAP (avg over IoU 0.5:0.95)", 12.5),
        ("QVHighlights", "validation", "MR R1@0.5", 20.0),
    }
    assert all(r.source_url == "https://huggingface.co/me/run" for r in card.data.eval_results)
    (run / "training_recipe.yaml").unlink()
    with pytest.raises(ValueError, match="cannot tell what .*eval_results.json measured"):
        publishing.load_run_results(run)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot read"),
        ('{"dataset": "x", "split": "val", "metrics": {"a": 1}}', "lacks \\['dataset_id'\\]"),
        (
            '{"dataset": "x", "dataset_id": "o/x", "split": "val", "metrics": {"a": "high"}}',
            "must be numbers",
        ),
        ('{"dataset": "x", "dataset_id": "o/x", "split": "val", "metrics": {}}', "non-empty"),
    ],
)
def test_bad_results_files_are_refused(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        publishing.load_measured_results(path)


def test_unknown_paper_setting_is_refused():
    with pytest.raises(ValueError, match="paper_setting"):
        publishing.render_model_card(paper_setting="imagenet")


# ------------------------------------------------------------------------------------------ repo folders
def test_model_repo_holds_everything_the_hub_needs(built_model_repo):
    files = {path for path, _ in publishing.upload_plan(built_model_repo)}
    assert {"README.md", "config.json", "model.safetensors", "handler.py", "requirements.txt"} <= files
    assert {f"encoder/{name}" for name in ("config.json", "model.safetensors", "tokenizer.json")} <= files
    modules = {path for path in files if path.endswith(".py") and "/" not in path} - {"handler.py"}
    package = publishing.PACKAGE_DIR
    assert {
        "pipeline_sgdetr.py",
        "long_video_sgdetr.py",
        "modeling_sgdetr.py",
        "feature_extraction_sgdetr.py",
    } <= modules
    assert all((package / name).is_file() for name in modules) and "__init__.py" not in modules
    assert not any(path.endswith((".bin", ".pt", ".pyc")) or "__pycache__" in path for path in files)
    config = json.loads((built_model_repo / "config.json").read_text())
    assert (
        config["custom_pipelines"]["video-moment-retrieval"]["impl"]
        == "pipeline_sgdetr.VideoMomentRetrievalPipeline"
    )
    assert config["auto_map"]["AutoModel"] == "modeling_sgdetr.SGDetrForMomentRetrieval"
    assert (built_model_repo / "handler.py").read_bytes() == (
        publishing.SOURCE_ROOT / "hub/model/handler.py"
    ).read_bytes()
    assert ModelCard.load(built_model_repo / "README.md").data.model_name == "tiny"


def test_the_card_names_every_package_the_remote_code_imports(built_model_repo):
    """The card's "only ... are needed" must hold: a module-level import of the remote code that is not the
    standard library, torch, transformers or one of transformers' own requirements stops
    ``from_pretrained(..., trust_remote_code=True)`` where the package is missing."""
    installed_with_transformers = {
        re.split(r"[<>=!;\[ ]", requirement)[0].replace("-", "_")
        for requirement in requires("transformers")
        if "extra ==" not in requirement
    }
    remote_code = [
        path for path in built_model_repo.glob("*.py") if path.name != "handler.py"
    ]  # the endpoint's
    imported = set().union(*map(get_imports, remote_code))
    needed = imported - set(sys.stdlib_module_names) - installed_with_transformers - {"torch", "transformers"}
    how_to_use = (built_model_repo / "README.md").read_text().split("## How to use")[1].split("```")[0]
    assert needed and all(f"`{name}`" in how_to_use for name in needed), (needed, how_to_use)


def test_model_build_refuses_incomplete_folders(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="no config.json"):
        publishing.build_model_repo(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="no InternVideo2 encoder"):
        publishing.build_model_repo(tiny_model_dir, tmp_path / "out", encoder_dir=tmp_path)
    assert not (tmp_path / "out").exists()


def test_the_encoder_is_published_with_the_packages_current_code(tmp_path, tiny_model_dir):
    """An encoder converted by an earlier release holds that release's .py files: the build replaces them by
    the package's (what a fresh conversion writes), and drops modules the package no longer has."""
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "trained")
    fresh = sorted(path.name for path in (model_dir / "encoder").glob("*.py"))
    stale = model_dir / "encoder" / "modeling_internvideo2.py"
    stale.write_text(stale.read_text() + "\nOLD_RELEASE = True\n")
    (model_dir / "encoder" / "modeling_internvideo2_old.py").write_text("OLD_RELEASE = True\n")
    encoder = publishing.build_model_repo(model_dir, tmp_path / "repo") / "encoder"
    assert sorted(path.name for path in encoder.glob("*.py")) == fresh
    for path in encoder.glob("*.py"):
        assert path.read_bytes() == (publishing.PACKAGE_DIR / path.name).read_bytes(), path.name
    assert (encoder / "model.safetensors").read_bytes() == (
        model_dir / "encoder/model.safetensors"
    ).read_bytes()


def _rename_the_model_class(encoder):
    config = json.loads((encoder / "config.json").read_text())
    config["auto_map"]["AutoModel"] = "modeling_internvideo2.InternVideo2OldModel"  # renamed since
    (encoder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "edit, named",
    [
        (
            _rename_the_model_class,
            "config.json names no AutoModel of this package "
            "(auto_map AutoModel: 'modeling_internvideo2.InternVideo2OldModel')",
        ),
        (
            lambda encoder: (encoder / "processor_config.json").unlink(),
            "processor_config.json names no AutoProcessor of this package (no such file)",
        ),
    ],
)
def test_an_encoder_whose_code_the_package_lacks_is_refused(tmp_path, tiny_model_dir, edit, named):
    encoder = shutil.copytree(tiny_model_dir / "encoder", tmp_path / "encoder")
    edit(encoder)
    with pytest.raises(ValueError) as refused:
        publishing.build_model_repo(tiny_model_dir, tmp_path / "repo", encoder_dir=encoder)
    assert str(refused.value) == (
        f"{encoder}/{named}, so the published encoder would not load with trust_remote_code=True; convert "
        "the encoder again with sgdetr convert-internvideo2"
    )
    assert not (tmp_path / "repo").exists()


def test_space_repo_bundles_the_app_and_the_package(tmp_path):
    folder = publishing.build_space_repo(tmp_path / "space", model_repo_id="org/my-model")
    files = {path for path, _ in publishing.upload_plan(folder)}
    assert {
        "app.py",
        "README.md",
        "requirements.txt",
        "sgdetr_hf/__init__.py",
        "sgdetr_hf/visualization.py",
    } <= files
    assert not any("__pycache__" in path for path in files)
    card = SpaceCard.load(folder / "README.md")
    assert (
        card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.models == ["org/my-model"]
    )


def test_a_build_replaces_an_earlier_build_but_never_a_folder_of_other_files(tmp_path):
    # the Space is the cheap build; the model repository goes through the same replacement
    folder = publishing.build_space_repo(tmp_path / "space", model_repo_id="org/one")
    (folder / "app.py").write_text("stale")
    publishing.build_space_repo(folder, model_repo_id="org/two")  # an earlier build: replaced whole
    assert (folder / "app.py").read_text() != "stale" and "org/two" in (folder / "README.md").read_text()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match=r"mine holds precious.txt, which a build does not write"):
        publishing.build_space_repo(mine)
    assert [p.name for p in mine.iterdir()] == ["precious.txt"]  # it was deleted before
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="a_file is a file"):
        publishing.build_space_repo(tmp_path / "a_file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "mine", "space"]  # no build left beside


# ------------------------------------------------------------------------------------------ upload
def test_upload_plan_applies_the_ignores(tmp_path):
    for name in (
        "README.md", "model.safetensors", "sub/dir/file.txt", "__pycache__/x.cpython-311.pyc", "sub/__pycache__/y.pyc",
        ".git/config", ".cache/huggingface/upload/x.lock", "checkpoint-100/optimizer.bin", "optimizer.pt", ".DS_Store",
    ):  # fmt: skip
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x" * len(name))
    plan = publishing.upload_plan(tmp_path)
    assert plan == [("README.md", 9), ("model.safetensors", 17), ("sub/dir/file.txt", 16)]
    table = publishing.format_plan(plan, "org/x", "model")
    assert table.splitlines()[0] == "model repo org/x: 3 files" and table.splitlines()[-1].split()[-1] == "42"


@pytest.mark.parametrize(
    "kind, repo_type, sdk",
    [("model", "model", None), ("dataset", "dataset", None), ("metric", "space", "gradio")],
)
def test_upload_repo_creates_then_uploads(tmp_path, kind, repo_type, sdk):
    api = mock.create_autospec(HfApi, instance=True)
    publishing.upload_repo(tmp_path, "org/x", kind, private=True, api=api)
    api.create_repo.assert_called_once_with(
        "org/x", repo_type=repo_type, private=True, exist_ok=True, space_sdk=sdk
    )
    kwargs = api.upload_folder.call_args.kwargs
    assert (
        kwargs["repo_id"] == "org/x"
        and kwargs["folder_path"] == str(tmp_path)
        and kwargs["repo_type"] == repo_type
    )
    assert kwargs["ignore_patterns"] == publishing.IGNORE_PATTERNS
    api.add_space_variable.assert_not_called()


def test_space_upload_sets_the_model_variable(tmp_path):
    api = mock.create_autospec(HfApi, instance=True)
    publishing.upload_repo(tmp_path, "org/demo", "space", space_model_id="org/model", api=api)
    assert api.create_repo.call_args.kwargs["space_sdk"] == "gradio"
    api.add_space_variable.assert_called_once()
    assert api.add_space_variable.call_args.args == ("org/demo", "SGDETR_MODEL", "org/model")
    with pytest.raises(ValueError, match="kind must be one of"):
        publishing.upload_repo(tmp_path, "org/x", "notebook", api=api)


# ------------------------------------------------------------------------------------------ the script
def test_dry_run_lists_every_file_and_uploads_nothing(
    push_script, tiny_model_dir, tmp_path, capsys, no_hub_calls
):
    out = tmp_path / "model"
    argv = [
        "--what",
        "model",
        "--repo-id",
        "org/m",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--dry-run",
    ]
    assert push_script.main(argv) == 0
    printed = capsys.readouterr().out
    plan = publishing.upload_plan(out)
    assert printed.strip() == publishing.format_plan(plan, "org/m", "model")
    assert "encoder/model.safetensors" in printed and "total" in printed


@pytest.mark.parametrize(
    "argv, first_line",
    [
        (["--what", "space", "--repo-id", "org/demo"], "space repo org/demo:"),
        (["--what", "metric", "--repo-id", "org/sgdetr_eval"], "space repo org/sgdetr_eval:"),
    ],
)
def test_dry_run_of_the_other_repos(push_script, tmp_path, capsys, no_hub_calls, argv, first_line):
    assert push_script.main(argv + ["--out", str(tmp_path / "out"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(first_line) and "README.md" in printed


def test_upload_through_the_script(push_script, tmp_path, capsys, monkeypatch):
    api = mock.create_autospec(HfApi, instance=True)
    monkeypatch.setattr(publishing, "HfApi", mock.Mock(return_value=api))
    assert push_script.main(["--what", "space", "--repo-id", "org/demo", "--out", str(tmp_path / "s")]) == 0
    api.create_repo.assert_called_once()
    assert api.upload_folder.call_args.kwargs["folder_path"] == str(tmp_path / "s")
    assert api.add_space_variable.call_args.args[2] == publishing.DEFAULT_MODEL_REPO


@pytest.mark.parametrize(
    "argv",
    [
        ["--what", "model", "--repo-id", "org/m"],  # no --model
        ["--what", "model"],  # no --repo-id
        ["--what", "dataset", "--repo-id", "org/d"],  # no --dataset-dir
        ["--what", "dataset", "--repo-id", "org/d", "--dataset-dir", "no-such-dataset"],
        # the card alone, without its data (before: published as the dataset)
        [
            "--what",
            "dataset",
            "--repo-id",
            "org/d",
            "--dataset-dir",
            str(publishing.SOURCE_ROOT / "hub/datasets/qvhighlights"),
        ],
    ],
)
def test_script_errors_are_usage_errors(push_script, argv, no_hub_calls, capsys):
    with pytest.raises(SystemExit) as exit_info:
        push_script.main(argv)
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--what", "metric", "--repo-id", "org/team/metric"],
            "--repo-id: Repo id must be in the form 'repo_name' or 'namespace/repo_name'",
        ),
        (
            ["--what", "space", "--repo-id", "org/demo", "--model-repo-id", "org/my model"],
            "--model-repo-id: Repo id must use alphanumeric chars",
        ),
        (
            ["--what", "model", "--repo-id", "org/m", "--space-id", "org/a--b"],
            "--space-id: Cannot have -- or ..",
        ),
    ],
)
def test_a_dry_run_refuses_ids_the_hub_refuses(push_script, tmp_path, argv, message, no_hub_calls, capsys):
    """A dry run that passes must mean the upload can: an id the Hub refuses is a usage error before any build
    (--model-repo-id goes into the Space's card and variable, --space-id into the model card's link)."""
    with pytest.raises(SystemExit) as exit_info:
        push_script.main(argv + ["--out", str(tmp_path / "out"), "--dry-run"])
    assert exit_info.value.code == 2 and f"error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _dataset_folder(root, with_data=True):
    """A folder as scripts/build_benchmark_dataset.py writes it: the card's configs and their Parquet shards."""
    (root / "qvhighlights").mkdir(parents=True)
    (root / "qvhighlights-features").mkdir()
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: qvhighlights\n  data_files:\n  - split: validation\n"
        "    path: qvhighlights/validation-*\n- config_name: qvhighlights-features\n  data_files:\n"
        "  - split: validation\n    path: qvhighlights-features/validation-*\n---\n# QVHighlights\n"
    )
    (root / "qvhighlights" / "validation-00000-of-00001.parquet").write_bytes(b"PAR1")
    if with_data:
        (root / "qvhighlights-features" / "validation-00000-of-00001.parquet").write_bytes(b"PAR1")
    return root


def test_a_dataset_is_published_with_its_data_and_refused_without(
    push_script, tmp_path, capsys, no_hub_calls
):
    folder = _dataset_folder(tmp_path / "qvh")
    assert (
        push_script.main(
            ["--what", "dataset", "--repo-id", "org/qvh", "--dataset-dir", str(folder), "--dry-run"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith("dataset repo org/qvh: 3 files")
    assert "qvhighlights-features/validation-00000-of-00001.parquet" in printed
    incomplete = _dataset_folder(tmp_path / "incomplete", with_data=False)
    with pytest.raises(
        ValueError, match="config 'qvhighlights-features', split 'validation' .* matches no file"
    ):
        publishing.dataset_folder(incomplete)
    with pytest.raises(ValueError, match="declares no data"):
        publishing.dataset_folder(publishing.SOURCE_ROOT / "hub" / "datasets" / "qvhighlights")


def test_the_default_build_folder_is_under_the_current_directory(
    push_script, tmp_path, monkeypatch, no_hub_calls
):
    monkeypatch.chdir(tmp_path)
    assert push_script.main(["--what", "space", "--repo-id", "org/demo", "--dry-run"]) == 0
    assert (tmp_path / "build" / "hub" / "space" / "app.py").is_file()  # before: SOURCE_ROOT/build/hub/space
