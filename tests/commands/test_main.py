"""The ``sgdetr`` command: every sub-command is there, options and recipe overrides reach the right place,
usage errors exit with 2, and building the parser leaves the heavy modules unimported."""

import subprocess
import sys

import pytest
import yaml

from sgdetr_hf.commands import COMMANDS, main

EXPECTED = {
    "train",
    "evaluate-model",
    "evaluate",
    "predict",
    "demo",
    "extract-features",
    "convert-internvideo2",
    "build-tiny-repo",
}


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listing = capsys.readouterr().out
    assert set(COMMANDS) == EXPECTED
    for name in COMMANDS:
        assert f"    {name}" in listing


def test_train_takes_recipe_overrides_and_the_log_level_on_either_side(capsys):
    argv = ["train", "--recipe", "demo", "--epochs", "3", "--model.hidden_size", "64", "--print-recipe"]
    assert main(["--log-level", "WARNING", *argv]) == 0
    recipe = yaml.safe_load(capsys.readouterr().out)
    assert recipe["epochs"] == 3 and recipe["model"]["hidden_size"] == 64
    assert main([*argv, "--log-level", "WARNING"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == recipe
    assert recipe["torch_compile"] is False
    assert main([*argv, "--compile"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {**recipe, "torch_compile": True}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--recipe", "demo", "--no_such_key", "1"], "no_such_key"),
        (["train", "--recipe", "demo", "--model.no_such_size", "1"], "no_such_size"),
        (["demo", "--top-k", "3", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--recipe", "demo", "--allow-inexact-resume"], "--allow-inexact-resume goes with --resume"),
        (["evaluate-model", "--model", "m", "--dataset", "d", "--output-dir", "o"], "--dataset-config is required"),
        (
            ["evaluate-model", "--model", "m", "--dataset", "d", "--output-dir", "o", "--dataset-config", "c",
             "--dataset-name", "qvhighlights", "--top-k", "0"],
            "--batch-size, --top-k and --max-samples must be >= 1",
        ),
    ],
)  # fmt: skip
def test_usage_errors_exit_with_2_and_the_subcommand_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith(f"usage: sgdetr {argv[0]}")


def imported_after(script: str, modules: str) -> str:
    """What of ``modules`` (a Python list expression) a fresh interpreter has imported after ``script``."""
    check = f"{script}\nimport sys\nprint([name for name in {modules} if name in sys.modules])\n"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_building_the_parser_leaves_training_and_plotting_unimported():
    script = "from sgdetr_hf.commands import build_parser\nbuild_parser()"
    heavy = "['sgdetr_hf.training.trainer', 'sgdetr_hf.training.evaluate_model', 'sgdetr_hf.visualization']"
    assert imported_after(script, heavy) == "[]"


def test_help_imports_no_sub_command():
    """``sgdetr --help`` lists the sub-commands from their names alone: no module of theirs is imported."""
    script = (
        "import contextlib, io\n"
        "from sgdetr_hf.commands import COMMANDS, main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--log-level', 'INFO', '--help'])"
    )
    modules = "[module for module, _ in COMMANDS.values()] + ['torch', 'transformers']"
    assert imported_after(script, modules) == "[]"
