"""The Trainer in this process: training for a number of steps, evaluating every N steps."""

import json

import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import pipeline

from internvideo2_testing import tiny_processor
from pipeline_testing import edit_weights
from sgdetr_hf import SGDetrConfig, SGDetrForMomentRetrieval
from sgdetr_hf.data.demo import build_demo_dataset
from sgdetr_hf.loading_sgdetr import CheckpointError
from sgdetr_hf.processing_sgdetr import SGDetrProcessor
from sgdetr_hf.training.recipe import load_recipe
from sgdetr_hf.training.trainer import Trainer, build_model


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
