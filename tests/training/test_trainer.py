"""The Trainer in this process: training for a number of steps, evaluating every N steps."""

import json
import math
import re
import shutil

import pytest
import torch
import yaml
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from transformers import pipeline

from internvideo2_testing import tiny_processor
from pipeline_testing import edit_weights
from sgdetr_hf import SGDetrConfig, SGDetrForMomentRetrieval
from sgdetr_hf.data.demo import build_demo_dataset
from sgdetr_hf.loading_sgdetr import CheckpointError
from sgdetr_hf.processing_sgdetr import SGDetrProcessor
from sgdetr_hf.training.checkpointing import TrainerState
from sgdetr_hf.training.errors import (
    DamagedCheckpointError,
    RecipeMismatchError,
    RunInputError,
    TrainingDivergedError,
)
from sgdetr_hf.training.recipe import load_recipe
from sgdetr_hf.training.trainer import Trainer, _LossMeter, build_model, train


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    build_demo_dataset(folder, num_train=12, num_validation=5)
    return folder


def test_max_steps_cuts_the_last_epoch_and_eval_every_steps_records_each_evaluation(demo_data, tmp_path):
    """12 samples in batches of 4: 3 steps per epoch, so 5 steps end one step into the second epoch."""
    overrides = {
        "dataset_path": str(demo_data), "output_dir": str(tmp_path), "batch_size": 4, "max_steps": 5,
        "eval_every_steps": 2, "logging_steps": 2, "milestones": [1], "checkpoints_total_limit": 1,
        "model.hidden_size": 32, "model.ffn_dim": 64, "model.num_dn_groups": 1,
    }  # fmt: skip
    trainer = Trainer(load_recipe("demo", overrides))
    result = trainer.run()
    assert (trainer.steps_per_epoch, trainer.total_steps, trainer.num_epochs, result.global_step) == (
        3,
        5,
        2,
        5,
    )
    history = trainer.state.history
    # steps 2 and 4, and the last step for the loss of its shorter interval
    assert [record["step"] for record in history if "loss" in record] == [2, 4, 5]
    evaluations = [record for record in history if "eval" in record]
    assert [(record["step"], record["epoch"]) for record in evaluations] == [
        (2, pytest.approx(2 / 3)),
        (4, pytest.approx(4 / 3)),
        (5, pytest.approx(5 / 3)),  # the end of training, once
    ]
    scores = [record["eval"]["MR-full-mAP"] for record in evaluations]
    assert result.model_dir == tmp_path / "best_model" and result.metrics["brief"]["MR-full-mAP"] == max(
        scores
    )
    final = json.loads((tmp_path / "final_model" / "eval_results.json").read_text())
    assert final["brief"] == evaluations[-1]["eval"]
    (checkpoint,) = (tmp_path / "checkpoints").iterdir()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert (checkpoint.name, state["epoch"], state["batches_done"]) == ("step_00000005", 2, 0)  # done


def test_the_recipe_query_cap_applies_to_the_collator_and_the_saved_processor(demo_data, tmp_path):
    """One query-length cap: the collator trims token features to it and the processor saved with the model
    tokenises raw queries to it, whatever the processor folder said."""
    tiny_processor().save_pretrained(tmp_path / "processor")  # max_query_length: the default, 32
    overrides = {
        "dataset_path": str(demo_data), "output_dir": str(tmp_path / "run"), "batch_size": 4, "max_steps": 1,
        "max_query_tokens": 5, "processor_path": str(tmp_path / "processor"),
        "model.hidden_size": 32, "model.ffn_dim": 64, "model.num_dn_groups": 1,
    }  # fmt: skip
    trainer = Trainer(load_recipe("demo", overrides))
    batch = next(iter(trainer.train_loader))
    assert batch["text_features"].shape[1] == 5 and trainer.collator.max_text_tokens == 5
    result = trainer.run()
    saved = SGDetrProcessor.from_pretrained(result.model_dir)
    assert saved.max_query_length == 5
    assert saved(text="a man rides a bike along the beach at dawn")["input_ids"].shape[-1] == 5
    # and the folder is a pipeline repository as written (on features: the run has no encoder)
    retriever = pipeline(model=str(result.model_dir), trust_remote_code=True)
    (answer,) = retriever({"video_features": torch.randn(30, 64)}, text_features=torch.randn(1, 6, 64))
    assert 1 <= len(answer["pred_relevant_windows"]) <= 10 and len(answer["pred_saliency_scores"]) == 30


def test_init_from_a_folder_lacking_a_weight_needs_allow_missing_weights(tmp_path):
    """Fine-tuning starts from every weight of init_from; a weight the folder lacks (a new head) would start
    random, so it is an error unless the recipe says allow_missing_weights (--allow-missing-weights)."""
    data = {"video_feature_dim": 16, "text_feature_dim": 16, "clip_length": 2.0}
    recipe = load_recipe("demo", {"init_from": str(tmp_path), "model.num_dn_groups": 1})
    SGDetrForMomentRetrieval(SGDetrConfig(**recipe.model, **data)).save_pretrained(tmp_path)
    (dropped,) = edit_weights(tmp_path, drop=1)
    with pytest.raises(CheckpointError, match=rf"1 missing, randomly initialised \({dropped}\)"):
        build_model(recipe, data)
    allowed = load_recipe(
        "demo", {"init_from": str(tmp_path), "allow_missing_weights": True, "model.num_dn_groups": 1}
    )
    assert isinstance(build_model(allowed, data), SGDetrForMomentRetrieval)
    with pytest.raises(ValueError, match="allow_missing_weights applies to the weights of init_from"):
        load_recipe("demo", {"allow_missing_weights": True})


def test_torch_compile_compiles_the_model_in_place(demo_data, tmp_path):
    """``torch_compile`` (``sgdetr train --compile``) compiles the trained model in place: its parameter
    names, and so its checkpoints and saved folders, stay those of the plain model."""
    overrides = {
        "dataset_path": str(demo_data), "output_dir": str(tmp_path / "run"), "batch_size": 4, "max_steps": 1,
        "model.hidden_size": 32, "model.ffn_dim": 64, "model.num_dn_groups": 1,
    }  # fmt: skip
    plain = Trainer(load_recipe("demo", overrides))
    compiled = Trainer(load_recipe("demo", {**overrides, "torch_compile": True}))
    unwrap = compiled.accelerator.unwrap_model
    assert unwrap(compiled.model)._compiled_call_impl is not None
    assert plain.accelerator.unwrap_model(plain.model)._compiled_call_impl is None
    assert list(unwrap(compiled.model).state_dict()) == list(
        plain.accelerator.unwrap_model(plain.model).state_dict()
    )


@pytest.mark.parametrize("retain", [True, False])
def test_cpu_runs_keep_freed_memory_unless_the_recipe_says_no(demo_data, tmp_path, monkeypatch, retain):
    calls = []
    monkeypatch.setattr("sgdetr_hf.training.trainer.retain_freed_memory", lambda: calls.append(1) or True)
    overrides = {"dataset_path": str(demo_data), "output_dir": str(tmp_path), "batch_size": 4, "max_steps": 1}
    Trainer(load_recipe("demo", {**overrides, "retain_cpu_memory": retain}))
    assert calls == ([1] if retain else [])


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state, fixed by the first Accelerator: this test's mixed precision
    differs from the other tests', so it starts from a fresh state and leaves one behind."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_mixed_precision_trains_under_autocast_with_float32_weights(
    demo_data, tmp_path, fresh_accelerator_state
):
    """``mixed_precision: bf16`` (the recipe default on a bf16 GPU): the forward runs under autocast and the
    weights stay float32; a step ends with a finite loss and changed weights."""
    overrides = {
        "dataset_path": str(demo_data), "output_dir": str(tmp_path), "batch_size": 4, "max_steps": 2,
        "logging_steps": 1, "mixed_precision": "bf16",
        "model.hidden_size": 32, "model.ffn_dim": 64, "model.num_dn_groups": 1,
    }  # fmt: skip
    trainer = Trainer(load_recipe("demo", overrides))
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    autocast_seen = []
    # accelerate wraps the top module's forward in autocast: its submodules run inside it
    model.sg_detr.video_projection.register_forward_pre_hook(
        lambda *_: autocast_seen.append(torch.is_autocast_enabled("cpu"))
    )
    trainer.run()
    assert trainer.accelerator.mixed_precision == "bf16" and autocast_seen and all(autocast_seen)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    losses = [record["loss"] for record in trainer.state.history if "loss" in record]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(before[name], p) for name, p in model.named_parameters())


# ------------------------------------------------------------------------------------------ resuming
RUN = {
    "batch_size": 4, "epochs": 2, "milestones": [1], "logging_steps": 1, "save_every_steps": 2,
    "checkpoints_total_limit": 10, "model.hidden_size": 32, "model.ffn_dim": 64, "model.num_dn_groups": 1,
}  # fmt: skip


def _recipe(data, output_dir, **changes):
    return load_recipe("demo", {**RUN, "dataset_path": str(data), "output_dir": str(output_dir), **changes})


@pytest.fixture(scope="module")
def finished_run(demo_data, tmp_path_factory):
    """A finished run: 3 steps per epoch, 2 epochs, checkpoints at steps 2, 3 (epoch end), 4 and 6."""
    folder = tmp_path_factory.mktemp("finished")
    train(_recipe(demo_data, folder))
    assert [p.name for p in (folder / "checkpoints").iterdir()] != []
    return folder


def _crashed_copy(finished_run, destination, keep="step_00000004"):
    """The finished run as a crash left it: no model folders, no checkpoint after ``keep``."""
    shutil.copytree(finished_run, destination)
    for name in ("best_model", "final_model"):
        shutil.rmtree(destination / name)
    for checkpoint in (destination / "checkpoints").iterdir():
        if checkpoint.name > keep:
            shutil.rmtree(checkpoint)
    return destination


def _weights(folder):
    return load_file(folder / "model.safetensors")


@pytest.mark.parametrize(
    "changes, differences",
    [
        ({"learning_rate": 0.1, "seed": 5}, "learning_rate: 0.001 (run) -> 0.1; seed: 42 (run) -> 5"),
        ({"batch_size": 2}, "batch_size: 4 (run) -> 2"),
        ({"model.hidden_size": 64}, "model.hidden_size: 32 (run) -> 64"),
        ({"epochs": 1}, "epochs: 2 (run) -> 1"),
    ],
    ids=["lr-and-seed", "batch-size", "model-width", "fewer-epochs"],
)
def test_a_resume_with_another_recipe_is_refused_and_the_run_s_record_kept(
    demo_data, finished_run, tmp_path, changes, differences
):
    """before: rc 0 with the checkpoint's old lr and records saying the new one; a run past max_steps; a
    traceback of size mismatches; an empty epoch range and a report naming a best_model that does not exist."""
    run = _crashed_copy(finished_run, tmp_path / "run")
    recorded = (run / "recipe.yaml").read_text()
    with pytest.raises(RecipeMismatchError) as error:
        train(_recipe(demo_data, run, **changes), resume="latest")
    message = str(error.value)
    assert f"cannot resume {run / 'checkpoints' / 'step_00000004'}: the recipe differs" in message
    assert f"that change what it computes: {differences}. Resume with the run's own recipe" in message
    assert f"--recipe {run / 'recipe.yaml'}" in message and "another --output_dir" in message
    assert (run / "recipe.yaml").read_text() == recorded  # never replaced by settings that were not used
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "learning_curves.png",
        "logs",
        "recipe.yaml",
    ]


def test_a_resume_may_change_only_what_cannot_change_the_run_and_stays_exact(
    demo_data, finished_run, tmp_path
):
    """The crashed run, moved to another folder and resumed with other logging and checkpoint settings,
    ends with the uninterrupted run's weights; the recipe it records has the new values."""
    run = _crashed_copy(finished_run, tmp_path / "moved")
    free = {
        "logging_steps": 2,
        "save_every_steps": 0,
        "checkpoints_total_limit": 3,
        "retain_cpu_memory": False,
    }
    result = train(_recipe(demo_data, run, **free), resume="latest")
    assert result.global_step == 6 and result.model_dir == run / "best_model" and result.model_dir.is_dir()
    expected, resumed = _weights(finished_run / "final_model"), _weights(run / "final_model")
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    recorded = yaml.safe_load((run / "final_model" / "training_recipe.yaml").read_text())
    assert (recorded["output_dir"], recorded["logging_steps"]) == (str(run), 2)


def test_a_moved_dataset_folder_resumes_only_when_it_holds_the_run_s_files(demo_data, finished_run, tmp_path):
    """before: any other dataset_path was refused, so a run whose dataset folder moved could not resume."""
    run = _crashed_copy(finished_run, tmp_path / "run")
    moved = shutil.copytree(demo_data, tmp_path / "moved")
    result = train(_recipe(moved, run), resume="latest")
    expected, resumed = _weights(finished_run / "final_model"), _weights(run / "final_model")
    assert result.global_step == 6 and all(torch.equal(expected[name], resumed[name]) for name in expected)
    recorded = yaml.safe_load((run / "final_model" / "training_recipe.yaml").read_text())
    assert recorded["dataset_path"] == str(moved)

    # the same rows and shapes, other features: refused, and so is a checkpoint that records no fingerprint
    other = tmp_path / "other"
    build_demo_dataset(other, num_train=12, num_validation=5, seed=1)
    run = _crashed_copy(finished_run, tmp_path / "run2")
    with pytest.raises(RecipeMismatchError) as error:
        train(_recipe(other, run), resume="latest")
    assert f"dataset_path: {str(demo_data)!r} (run) -> {str(other)!r}." in str(error.value)
    assert f"holds the files the run read: those of {str(other)!r} differ." in str(error.value)
    state_file = run / "checkpoints" / "step_00000004" / "trainer_state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "dataset_fingerprint": None}))
    with pytest.raises(RecipeMismatchError, match="this checkpoint records no fingerprint of them"):
        train(_recipe(moved, run), resume="latest")


def test_a_dataset_rebuilt_in_place_with_other_files_is_not_resumed(demo_data, finished_run, tmp_path):
    """before: a resume at the run's dataset_path read whatever the folder held by then"""
    data = shutil.copytree(demo_data, tmp_path / "data")
    run = _crashed_copy(finished_run, tmp_path / "run")
    state_file = run / "checkpoints" / "step_00000004" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["recipe"]["dataset_path"] = str(data)  # the run was trained from this folder
    state_file.write_text(json.dumps(state))
    shutil.rmtree(data)
    build_demo_dataset(
        data, num_train=12, num_validation=5, seed=1
    )  # the same rows and shapes, other features
    with pytest.raises(
        RecipeMismatchError, match=r"the files of dataset .*data' changed since the run started"
    ):
        train(_recipe(data, run), resume="latest")


def test_a_resume_inside_a_logging_interval_logs_the_uninterrupted_run_s_losses(demo_data, tmp_path):
    """Logged every 3 steps, checkpointed every 2: the step-2 checkpoint cuts the first interval. before: the
    resumed run logged at step 3 the loss of step 3 alone (217.6 instead of the mean of steps 1-3, 213.2)."""
    every = {"logging_steps": 3}
    full = train(_recipe(demo_data, tmp_path / "full", **every)).output_dir
    state = json.loads((full / "checkpoints" / "step_00000002" / "trainer_state.json").read_text())
    assert state["loss_steps"] == 2 and len(state["loss_sums"]) == 1 and state["loss_sums"][0]["loss"] > 0
    run = _crashed_copy(full, tmp_path / "run", keep="step_00000002")
    train(_recipe(demo_data, run, **every), resume="latest")

    def history(folder):
        return json.loads((folder / "checkpoints" / "step_00000006" / "trainer_state.json").read_text())[
            "history"
        ]

    assert [record["step"] for record in history(full) if "loss" in record] == [3, 6]
    assert history(run) == history(full)  # every logged loss, learning rate and evaluation


def test_the_loss_meter_restores_each_saved_process_s_sums_once():
    """A 2-process interval resumed on 1 process (and on 2) reads the same terms as the saved run would."""
    saved = TrainerState(loss_sums=[{"loss": 3.0, "a": 1.0}, {"loss": 5.0, "b": 2.0}], loss_steps=2)
    meter = _LossMeter()
    meter.restore(saved, process_index=0, num_processes=1)
    assert (dict(meter.sums), meter.steps) == ({"loss": 8.0, "a": 1.0, "b": 2.0}, 2)
    meter.restore(saved, process_index=1, num_processes=2)
    assert dict(meter.sums) == {"loss": 5.0, "b": 2.0}


def test_a_finished_run_resumes_to_nothing_and_never_names_a_missing_model(demo_data, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = _weights(run / "final_model")
    result = train(_recipe(demo_data, run), resume="latest")  # nothing left to train
    assert (result.global_step, result.model_dir) == (6, run / "best_model") and result.metrics is not None
    assert all(torch.equal(before[name], _weights(run / "final_model")[name]) for name in before)
    shutil.rmtree(run / "best_model")
    with pytest.raises(RunInputError, match=f"{run / 'best_model'} does not exist: the run ended at step 6"):
        train(_recipe(demo_data, run), resume="latest")


def test_a_checkpoint_without_a_recorded_recipe_ending_the_shorter_recipe_names_no_missing_model(
    demo_data, finished_run, tmp_path
):
    """A checkpoint written before recipes were recorded cannot be compared: resumed with a recipe that ends at
    it (epochs 1, checkpoint at the end of epoch 1) it trains nothing, and the report must not name a
    best_model that was never saved (before: rc 0 and "model: .../best_model")."""
    run = _crashed_copy(finished_run, tmp_path / "run", keep="step_00000003")
    state_file = run / "checkpoints" / "step_00000003" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({k: v for k, v in state.items() if k != "recipe"}))
    (run / "recipe.yaml").unlink()
    with pytest.raises(RunInputError, match="best_model does not exist: the run ended at step 3"):
        train(_recipe(demo_data, run, epochs=1), resume="latest")


def test_a_checkpoint_position_that_is_not_the_run_s_is_refused(demo_data, finished_run, tmp_path):
    run = _crashed_copy(finished_run, tmp_path / "run")
    state_file = run / "checkpoints" / "step_00000004" / "trainer_state.json"
    state_file.write_text(state_file.read_text().replace('"global_step": 4', '"global_step": 5'))
    with pytest.raises(
        DamagedCheckpointError, match=r"position \(epoch 1, batch 1, step 5\) is not one of this run"
    ):
        train(_recipe(demo_data, run), resume="latest")


def test_a_folder_holding_another_run_s_models_is_never_trained_over(demo_data, finished_run, tmp_path):
    """before: a folder with best_model/final_model and no checkpoints/ was overwritten without a word"""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "checkpoints")
    message = f"{run} already holds best_model and final_model of a run, and no checkpoint to resume it from"
    with pytest.raises(RunInputError, match=re.escape(message)):
        Trainer(_recipe(demo_data, run)).run()  # also when resume() is never called
    with pytest.raises(RunInputError, match=re.escape(message)):
        train(_recipe(demo_data, run), resume="latest")
    # nor resumed into from another run's checkpoint
    other = finished_run / "checkpoints" / "step_00000004"
    with pytest.raises(RunInputError, match=f"cannot resume {other} into {run}: that folder holds"):
        train(_recipe(demo_data, run), resume=str(other))
    assert _weights(run / "final_model").keys() == _weights(finished_run / "final_model").keys()


def test_max_steps_is_a_hard_stop_even_from_an_offset_position(demo_data, tmp_path):
    """A position ahead of its epoch (what a checkpoint of another batch size gave, before the recipe
    check: the run went on to step 11 of max_steps 8) still ends at max_steps, with its final model."""
    trainer = Trainer(_recipe(demo_data, tmp_path, max_steps=5, save_every_steps=0))
    assert (trainer.steps_per_epoch, trainer.num_epochs) == (3, 2)
    trainer.state.global_step = 3  # at the start of epoch 0
    result = trainer.run()
    assert result.global_step == 5 and (tmp_path / "final_model").is_dir()
    assert [record["step"] for record in trainer.state.history if "loss" in record] == [4, 5]


def test_weights_gone_non_finite_end_the_run_with_the_learning_rate_named(demo_data, tmp_path):
    """before: "Non-finite matching cost" from inside the loss, as a traceback"""
    trainer = Trainer(_recipe(demo_data, tmp_path, max_steps=2))
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(math.nan)
    with pytest.raises(TrainingDivergedError, match=r"training diverged at step 1: .* \(learning_rate 0.001"):
        trainer.run()
