"""What a model is loaded from (``loading_sgdetr``): a wrong or broken folder is a ``CheckpointError`` naming the file
and what was expected, before anything is built, never a randomly initialised model; missing or unexpected
weights are an error unless ``allow_missing_weights=True``."""

import shutil

import pytest
import torch

from pipeline_testing import damage_file, edit_weights, save_tiny_model_repo
from sgdetr_hf import SGDetrForMomentRetrieval
from sgdetr_hf.configuration_internvideo2 import InternVideo2Config
from sgdetr_hf.loading_sgdetr import CheckpointError, resolve_device
from sgdetr_hf.modeling_internvideo2 import InternVideo2Model
from sgdetr_hf.modeling_sgdetr import SGDetrModel

MODELS = {"sgdetr": SGDetrForMomentRetrieval, "internvideo2": InternVideo2Model}


@pytest.fixture(scope="module")
def saved_repo(tmp_path_factory):
    return save_tiny_model_repo(tmp_path_factory.mktemp("saved"))


@pytest.fixture
def repo(saved_repo, tmp_path):
    """A copy of the tiny repository this test may damage."""
    return shutil.copytree(saved_repo, tmp_path / "repo")


def _folder(repo, kind):
    return repo if kind == "sgdetr" else repo / "encoder"


@pytest.fixture
def nothing_is_built(monkeypatch):
    """Building either model fails the test: the checks must come first."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("a model was built")

    for model_class in MODELS.values():
        monkeypatch.setattr(model_class, "__init__", refuse)


@pytest.mark.parametrize("kind", MODELS)
def test_an_intact_folder_loads_every_weight(repo, kind):
    model, info = MODELS[kind].from_pretrained(_folder(repo, kind), output_loading_info=True)
    assert isinstance(model, MODELS[kind])
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))


@pytest.mark.parametrize("kind", MODELS)
def test_a_missing_or_unexpected_weight_is_an_error_unless_allowed(repo, kind):
    folder = _folder(repo, kind)
    (dropped,) = edit_weights(folder, drop=1)
    with pytest.raises(CheckpointError, match=rf"1 missing, randomly initialised \({dropped}\)") as error:
        MODELS[kind].from_pretrained(folder)
    assert str(folder) in str(error.value) and "allow_missing_weights=True" in str(error.value)
    model, info = MODELS[kind].from_pretrained(folder, allow_missing_weights=True, output_loading_info=True)
    assert info["missing_keys"] == {dropped}

    edit_weights(folder, add={"extra.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"1 unexpected, ignored \(extra.weight\)"):
        MODELS[kind].from_pretrained(folder)
    assert isinstance(MODELS[kind].from_pretrained(folder, allow_missing_weights=True), MODELS[kind])


def test_a_weight_of_another_shape_is_an_error_not_a_runtime_error(repo):
    name = "sg_detr.token_type_embeddings.weight"
    edit_weights(repo, add={name: torch.zeros(3, 32)})
    with pytest.raises(CheckpointError, match=rf"1 of another shape.*{name} \(3, 32\) vs \(2, 32\)"):
        SGDetrForMomentRetrieval.from_pretrained(repo)
    # asked for: the caller's ignore_mismatched_sizes=True still lets shape changes alone through
    SGDetrForMomentRetrieval.from_pretrained(repo, ignore_mismatched_sizes=True)


def test_the_encoder_side_alone_still_loads_from_the_whole_models_folder(repo):
    # The detector's weights are in the file and not in SGDetrModel: expected, since the folder was saved as a
    # SGDetrForMomentRetrieval (config.architectures), as transformers documents for a base model.
    assert isinstance(SGDetrModel.from_pretrained(repo), SGDetrModel)


@pytest.mark.parametrize("how", ["zero-byte", "truncated", "bad-header"])
@pytest.mark.parametrize("kind", MODELS)
def test_damaged_safetensors_are_refused_before_building_naming_the_file(repo, kind, how, nothing_is_built):
    weights = damage_file(_folder(repo, kind) / "model.safetensors", how)
    with pytest.raises(CheckpointError, match=rf"{weights} is not a readable safetensors file"):
        MODELS[kind].from_pretrained(weights.parent)


@pytest.mark.parametrize("kind", MODELS)
def test_weights_damaged_under_an_intact_header_are_refused(repo, kind):
    # safetensors has no checksum: random bytes under a valid header load, and about one float32 in 256 of them
    # is NaN or Inf (the rest reach 3.4e38)
    folder = _folder(repo, kind)
    damage_file(folder / "model.safetensors", "random-body")
    with pytest.raises(CheckpointError, match=rf"the weights in {folder} hold NaN, Inf or absurdly large"):
        MODELS[kind].from_pretrained(folder, allow_missing_weights=True)  # refused in every case


def test_a_weight_saved_with_nan_is_refused_naming_it(repo):
    name = "sg_detr.token_type_embeddings.weight"
    edit_weights(repo, add={name: torch.tensor([[0.5] * 32, [float("nan")] + [0.5] * 31])})
    with pytest.raises(CheckpointError, match=rf"in 1 tensors \({name}\): the file is damaged, or was saved"):
        SGDetrForMomentRetrieval.from_pretrained(repo)
    edit_weights(repo, add={name: torch.full((2, 32), 0.5)})
    assert SGDetrForMomentRetrieval.from_pretrained(repo).sg_detr.token_type_embeddings.weight[1, 0] == 0.5


@pytest.mark.parametrize("kind", MODELS)
def test_a_pickle_only_folder_is_refused_and_never_unpickled(repo, kind, nothing_is_built, monkeypatch):
    folder = _folder(repo, kind)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"a pickle that must never be read")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(
        CheckpointError, match=r"has no model.safetensors, only pickled weights \(pytorch_model.bin\)"
    ):
        MODELS[kind].from_pretrained(folder)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match=f"{folder} has no model.safetensors: expected"):
        MODELS[kind].from_pretrained(folder)


@pytest.mark.parametrize("name", ["weights.bin", "model.safetensors", "config.json"])
@pytest.mark.parametrize("kind", MODELS)
def test_a_file_given_as_the_model_path_is_refused_and_never_unpickled(
    repo, kind, name, nothing_is_built, monkeypatch
):
    # transformers loads a weights file given as the path, a pickle included, and reads config.json as weights
    folder = _folder(repo, kind)
    torch.save({"sg_detr.token_type_embeddings.weight": torch.zeros(2, 32)}, folder / "weights.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    config = MODELS[kind].config_class.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=rf"{folder / name} is a file: pass the folder that holds"):
        MODELS[kind].from_pretrained(folder / name, config=config)


@pytest.mark.parametrize("kind", MODELS)
def test_a_config_json_that_is_not_an_object_is_refused_before_building(repo, kind, nothing_is_built):
    folder = _folder(repo, kind)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=f"config.json of {folder} holds a JSON list, not an object"):
        MODELS[kind].from_pretrained(folder)


@pytest.mark.parametrize("kind", MODELS)
def test_a_folder_without_config_json_is_refused_before_building(repo, kind, nothing_is_built):
    folder = _folder(repo, kind)
    (folder / "config.json").unlink()
    expected = "an SG-DETR model folder" if kind == "sgdetr" else "`sgdetr convert-internvideo2`"
    with pytest.raises(CheckpointError, match=f"{folder} has no config.json: expected .*{expected}"):
        MODELS[kind].from_pretrained(folder)


def test_an_sgdetr_folder_is_not_an_internvideo2_and_the_other_way_round(repo, nothing_is_built):
    with pytest.raises(
        CheckpointError,
        match=r"model_type='sg-detr', but InternVideo2Config expects 'internvideo2'.*convert-internvideo2",
    ):
        InternVideo2Model.from_pretrained(repo)
    with pytest.raises(
        CheckpointError, match=r"model_type='internvideo2', but SGDetrConfig expects 'sg-detr'"
    ):
        SGDetrForMomentRetrieval.from_pretrained(repo / "encoder")
    with pytest.raises(CheckpointError, match="model_type='sg-detr'"):
        InternVideo2Config.from_pretrained(repo)


def test_devices_this_torch_cannot_use_are_refused(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(-1) == resolve_device("cpu:0")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device cuda:0 asked for, but this torch .*; use cpu"):
        resolve_device("cuda:0")
    with pytest.raises(ValueError, match="device cuda:1 asked for"):
        resolve_device(1)
