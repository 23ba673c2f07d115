"""End to end on the demo data: a run, a SIGKILL + resume, 2 processes, and scripts/evaluate.py.

All runs are subprocesses (as users launch them) of one tiny configuration: 24 training and 9
validation queries, batch 4 (6 optimizer steps per epoch), 2 epochs, a 32-wide SG-DETR.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline_testing import damage_file, edit_weights, save_tiny_model_repo
from sgdetr_hf.commands import main
from sgdetr_hf.configuration_sgdetr import SGDetrConfig
from sgdetr_hf.data.demo import build_demo_dataset
from sgdetr_hf.modeling_sgdetr import SGDetrForMomentRetrieval

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NUM_VAL = 9  # odd: the 2-process evaluation pads its last batch, gather_for_metrics must drop the duplicate
TIMEOUT = 300


def _args(data: Path, output_dir: Path) -> list[str]:
    return [
        "--recipe", "demo", "--dataset_path", str(data), "--output_dir", str(output_dir),
        "--epochs", "2", "--batch_size", "4", "--learning_rate", "5e-4", "--milestones", "[1]", "--eval_every_epochs", "1",
        "--logging_steps", "1", "--save_every_steps", "2", "--checkpoints_total_limit", "20",
        "--model.hidden_size", "32", "--model.num_attention_heads", "4", "--model.ffn_dim", "64",
        "--model.num_dn_groups", "1",
    ]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, (
        f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-6000:]}"
    )
    return result


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final_model" / "model.safetensors")


def _losses(run_dir: Path) -> list[float]:
    state = json.loads(sorted((run_dir / "checkpoints").glob("step_*/trainer_state.json"))[-1].read_text())
    return [record["loss"] for record in state["history"] if "loss" in record]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo-data")
    build_demo_dataset(folder, num_train=24, num_validation=NUM_VAL)
    return folder


@pytest.fixture(scope="module")
def single_run(data, tmp_path_factory) -> Path:
    """The uninterrupted single-process reference run."""
    output_dir = tmp_path_factory.mktemp("single")
    _run([sys.executable, "scripts/train.py", *_args(data, output_dir)])
    return output_dir


def test_single_process_run_outputs(single_run):
    best = single_run / "best_model"
    metrics = json.loads((best / "eval_results.json").read_text())
    assert metrics["num_predictions"] == NUM_VAL
    assert set(metrics["brief"]) >= {"MR-full-mAP", "MR-full-R1@0.5", "HL-min-VeryGood-mAP"}
    model = SGDetrForMomentRetrieval.from_pretrained(best)  # safetensors + config
    assert (best / "model.safetensors").is_file() and model.config.hidden_size == 32
    assert (single_run / "learning_curves.png").is_file()
    state = json.loads((single_run / "checkpoints" / "step_00000012" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batches_done"], state["global_step"]) == (2, 0, 12)
    # The best model is the evaluation with the highest main metric.
    evaluations = [r["eval"]["MR-full-mAP"] for r in state["history"] if "eval" in r]
    assert (
        len(evaluations) == 2 and state["best_metric"] == max(evaluations) == metrics["brief"]["MR-full-mAP"]
    )
    # tensorboard: every loss term and the learning rate, once per optimizer step
    (log_dir,) = (single_run / "logs").iterdir()
    events = EventAccumulator(str(log_dir)).Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "eval/MR-full-mAP"} <= set(tags)
    assert any(t.startswith("train/hl_") for t in tags) and any(t.startswith("train/detr_") for t in tags)
    lrs = [e.value for e in events.Scalars("train/lr")]
    # 45 warm-up steps from 0.001 x 5e-4, halved at the milestone (epoch 1 = step 6); lr logged after step s
    assert lrs[0] == pytest.approx(5e-4 * (0.001 + 0.999 / 45))
    assert lrs[6] == pytest.approx(5e-4 * (0.001 + 0.999 * 7 / 45) * 0.5)


def test_sigkill_mid_epoch_then_resume_gives_the_same_weights(data, single_run, tmp_path):
    command = [sys.executable, "scripts/train.py", *_args(data, tmp_path)]
    checkpoint = tmp_path / "checkpoints" / "step_00000002"
    process = subprocess.Popen(
        command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + TIMEOUT
    while (
        not (checkpoint / "trainer_state.json").exists()
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "final_model").exists()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert (state["epoch"], state["batches_done"]) == (0, 2)  # mid-epoch: 2 of 6 batches

    _run([*command, "--resume", str(checkpoint)])
    resumed, uninterrupted = _weights(tmp_path), _weights(single_run)
    assert resumed.keys() == uninterrupted.keys()
    for name in uninterrupted:
        assert torch.equal(resumed[name], uninterrupted[name]), name
    assert _losses(tmp_path) == _losses(single_run)


def test_resume_refuses_a_tampered_rng_file_with_a_one_line_error(data, single_run, tmp_path):
    checkpoint = tmp_path / "checkpoints" / "step_00000002"
    shutil.copytree(single_run / "checkpoints" / "step_00000002", checkpoint)
    (checkpoint / "random_states_0.pkl").write_bytes(b"tampered")
    command = [sys.executable, "scripts/train.py", *_args(data, tmp_path), "--resume", str(checkpoint)]
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    # before: accelerate skipped the file ("Could not load random states", at INFO) and training went on
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"error: cannot resume {checkpoint} exactly: random_states_0.pkl is not the file saved" in line
    assert "--allow-inexact-resume" in line and "Traceback" not in result.stderr
    assert not (tmp_path / "final_model").exists()


# Dropout draws from each process's own RNG stream: off for the comparison (README "Training"). Everything
# else is on: denoising noise, in-batch negatives, the margin pairs of L_hl, the alignment pool.
NO_DROPOUT = ["--model.dropout", "0", "--model.input_dropout", "0", "--max_steps", "5"]


def test_two_processes_and_gradient_accumulation_match_one_process(data, tmp_path):
    one, two, accumulated = tmp_path / "one", tmp_path / "two", tmp_path / "accumulated"
    _run([sys.executable, "scripts/train.py", *_args(data, one), *NO_DROPOUT])
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "scripts/train.py",
        *_args(data, two),
    ]
    result = _run([*command, *NO_DROPOUT], ACCELERATE_USE_CPU="1")
    assert "terminate called" not in result.stderr
    accumulation = ["--gradient_accumulation_steps", "2"]
    _run([sys.executable, "scripts/train.py", *_args(data, accumulated), *NO_DROPOUT, *accumulation])
    # Two ranks: accelerate wrote one RNG state per process.
    last = two / "checkpoints" / "step_00000005"
    assert sorted(p.name for p in last.glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    # Every validation query evaluated exactly once (evaluation also raises on a duplicate or a gap).
    assert json.loads((two / "final_model" / "eval_results.json").read_text())["num_predictions"] == NUM_VAL

    # The same global batch per step, computed as 2 processes x 2 samples or 2 micro-batches x 2 samples:
    # the same loss at every step and the same weights after the 5 steps, up to fp32 rounding.
    reference, weights = _losses(one), _weights(one)
    assert len(reference) == 5
    set_seed(42)  # the recipe's seed: the trainer builds the model right after seeding
    initial = SGDetrForMomentRetrieval(SGDetrConfig.from_pretrained(one / "final_model")).state_dict()
    names = sorted(weights)
    for run in (two, accumulated):
        assert _losses(run) == pytest.approx(reference, rel=1e-5), run.name
        other = _weights(run)
        assert other.keys() == weights.keys()
        # Measured: 7e-8 for the whole model, at most 2e-7 for one tensor. Tensors of norm < 1e-3 are left
        # out of the per-tensor bound: they are biases whose gradient is 0 in exact arithmetic (a key bias
        # shifts every attention logit alike), so they hold fp32 rounding noise that AdamW scales to ~1e-6.
        for name in names:
            if weights[name].norm() >= 1e-3:
                assert (other[name] - weights[name]).norm() <= 1e-4 * weights[name].norm(), (run.name, name)
        apart = torch.cat([(other[n] - weights[n]).flatten() for n in names]).norm()
        assert apart <= 1e-4 * torch.cat([weights[n].flatten() for n in names]).norm(), run.name
        # and far below what the 5 steps moved the weights: the runs really trained alike
        assert apart < 1e-3 * torch.cat([(weights[n] - initial[n]).flatten() for n in names]).norm(), run.name


def test_evaluate_script_round_trip(data, single_run, tmp_path):
    _run([sys.executable, "scripts/evaluate.py", "--model", str(single_run / "best_model"), "--dataset", str(data),
          "--split", "validation", "--output-dir", str(tmp_path), "--batch-size", "4", "--plot", "1"])  # fmt: skip
    metrics = json.loads((tmp_path / "metrics_validation.json").read_text())
    assert metrics == json.loads((single_run / "best_model" / "eval_results.json").read_text())
    lines = (tmp_path / "predictions_validation.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len({row["qid"] for row in rows}) == len(rows) == NUM_VAL
    assert all(len(row["pred_relevant_windows"]) <= 10 and row["pred_saliency_scores"] for row in rows)
    assert len(list((tmp_path / "plots").glob("*.png"))) == 1


def test_init_from_fine_tunes_the_given_weights(data, single_run, tmp_path):
    # With a vanishing learning rate, fine-tuning for an epoch must end where it started: the given model.
    args = [*_args(data, tmp_path), "--epochs", "1", "--learning_rate", "1e-12", "--eval_split", "null"]
    _run([sys.executable, "scripts/train.py", *args, "--init-from", str(single_run / "best_model")])
    start, end = load_file(single_run / "best_model" / "model.safetensors"), _weights(tmp_path)
    assert all(torch.allclose(end[name], start[name], rtol=0, atol=1e-6) for name in start)
    assert (tmp_path / "final_model" / "training_recipe.yaml").read_text().count("init_from:") == 1


@pytest.mark.parametrize("damage", ["a missing weight", "truncated"])
def test_evaluate_model_refuses_a_damaged_model_in_one_line(tmp_path, damage, capsys):
    model = save_tiny_model_repo(tmp_path / "model")
    named = (
        edit_weights(model, drop=1)[0]
        if damage == "a missing weight"
        else f"{damage_file(model / 'model.safetensors', damage)} is not a readable safetensors file"
    )
    argv = ["evaluate-model", "--model", str(model), "--dataset", str(tmp_path / "data"), "--dataset-config",
            "demo", "--dataset-name", "qvhighlights", "--output-dir", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: ") and named in err


def _main_error(argv: list[str], capsys) -> str:
    """Run ``sgdetr`` in this process on arguments it must refuse: exit code 2, one message, no traceback.
    Returns the message line (``error: ...`` or argparse's ``sgdetr <command>: error: ...``)."""
    try:
        code = main(argv)
    except SystemExit as exit_info:  # CommandLineError: the usage, then the message
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-3000:]
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "extra, message",
    [
        # recipe values: refused before anything is loaded or written (before: after an epoch, at the first
        # steps or at the first checkpoint)
        (["--main_metric", "MR-full-map"], "main_metric='MR-full-map' is not a qvhighlights metric (did you mean 'MR-full-mAP'?)"),
        (["--learning_rate", "1e10"], "learning_rate must be <= 1"),
        (["--gamma", "inf"], "gamma must be a finite number, got inf"),
        (["--max_train_samples", "0"], "max_train_samples must be >= 1"),
        (["--seed", "-1"], "seed must be in [0, 2**32 - 1]"),
        # what the run is given (before: tracebacks)
        (["--dataset_path", "null"], "error: recipe 'demo' has no dataset_path: pass --dataset_path"),
        (["--dataset_config", "nosuch"], "error: cannot load split 'train' of config 'nosuch' from dataset"),
        (["--eval_split", "nosuch"], "error: cannot load split 'nosuch' of config 'demo' from dataset"),
        (["--model.hidden_size", "30"], "error: the recipe's model section (model.<key>) is not a valid config: "
         "SGDetrConfig.hidden_size (30) must be divisible by num_attention_heads (4)"),
        (["--processor_path", "/nonexistent"], "error: processor_path '/nonexistent' does not exist"),
        (["--init-from", "{data}"], "error: {data} has no model.safetensors: expected an SG-DETR model folder"),
        (["--dataset_path", "{model}"], "error: cannot load split 'train' of config 'demo' from dataset '{model}': "
         "it is a model folder, not a dataset"),
    ],
    ids=["main_metric", "lr", "gamma", "max_train_samples", "seed", "no-dataset", "config", "eval_split",
         "model-config", "processor", "init-from-data", "dataset-is-a-model"],
)  # fmt: skip
def test_train_refuses_bad_input_in_one_line(data, tmp_path, capsys, extra, message):
    model = save_tiny_model_repo(tmp_path / "model")
    extra = [value.format(data=data, model=model) for value in extra]
    line = _main_error(["train", *_args(data, tmp_path / "run"), *extra], capsys)  # the last value wins
    assert message.format(data=data, model=model) in line
    assert not (tmp_path / "run").exists()  # nothing written


def test_train_refuses_a_changed_recipe_or_a_damaged_checkpoint_in_one_line(
    data, single_run, tmp_path, capsys
):
    checkpoints = tmp_path / "checkpoints"
    checkpoint = checkpoints / "step_00000002"
    shutil.copytree(single_run / "checkpoints" / "step_00000002", checkpoint)
    args = ["train", *_args(data, tmp_path), "--resume"]
    line = _main_error([*args, "--learning_rate", "0.1", "--seed", "5"], capsys)
    assert line.startswith(
        f"error: cannot resume {checkpoint}: the recipe differs from the run's in 2 setting(s)"
    )
    assert "learning_rate: 0.0005 (run) -> 0.1; seed: 42 (run) -> 5" in line
    line = _main_error([*args, str(checkpoints)], capsys)  # before: the right message, in a traceback
    assert (
        f"error: {checkpoints} is not a complete training checkpoint" in line and "['step_00000002']" in line
    )
    damage_file(checkpoint / "optimizer.bin", "zero-byte")  # before: a bare EOFError
    line = _main_error(args, capsys)
    assert f"error: cannot resume {checkpoint}: the checkpoint is damaged: optimizer.bin is 0 bytes" in line
    assert "a fresh run in another --output_dir" in line
    assert not (tmp_path / "final_model").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--split", "nosuch"], "error: cannot load split 'nosuch' of config 'demo'"),
        (["--dataset-config", "nosuch"], "error: cannot load split 'validation' of config 'nosuch'"),
        (["--max-samples", "0"], "--max-samples must be >= 1"),
        ([], "error: model {model} does not fit the dataset: video_feature_dim=16 (dataset: 64)"),
    ],
    ids=["split", "config", "max-samples", "feature-width"],
)
def test_evaluate_model_refuses_bad_input_in_one_line(data, tmp_path, capsys, extra, message):
    """before: tracebacks (only CheckpointError and OSError were caught)"""
    model = save_tiny_model_repo(tmp_path / "model")  # 16-d features; the demo data has 64
    argv = ["evaluate-model", "--model", str(model), "--dataset", str(data), "--dataset-config", "demo",
            "--dataset-name", "qvhighlights", "--output-dir", str(tmp_path / "out"), *extra]  # fmt: skip
    assert message.format(model=model) in _main_error(argv, capsys)
