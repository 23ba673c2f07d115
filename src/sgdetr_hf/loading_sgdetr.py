"""Checks on what a model or processor is loaded from, so that a wrong or broken folder is an error naming the
file and what was expected, never a randomly initialised model that runs to completion and prints garbage.

- :func:`check_config_dict`: a folder's ``config.json`` exists and is of the expected ``model_type``
  (transformers builds a default config, e.g. a 1B InternVideo2, when ``config.json`` is missing);
- :func:`check_weights_files`: a local folder's weights are readable safetensors; a pickle-only folder
  (``pytorch_model.bin``) is refused, since unpickling can run code, and so is a file given as the model's path;
- :func:`from_pretrained_checked`: ``PreTrainedModel.from_pretrained`` with those checks first, and missing,
  unexpected or shape-mismatched weights an error unless ``allow_missing_weights=True`` (fine-tuning with new
  heads), read from transformers' own ``output_loading_info``, and so are weights that hold NaN or Inf
  (:func:`non_finite_parameters`: safetensors has no checksum, so a damaged body under an intact header loads);
- :func:`resolve_device`: a torch device this torch build can use.

Shipped as remote code (the configurations, models, processor and pipeline import it): third-party imports only.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
#: Weight files that are pickles (torch.save / Lightning / DeepSpeed); their presence names the problem.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

#: What each kind of folder is, and how to get one, for the error messages.
SGDETR_FOLDER = (
    "an SG-DETR model folder (written by save_pretrained: a training run's best_model/ or final_model/, "
    "or a downloaded model repository)"
)
INTERNVIDEO2_FOLDER = "an InternVideo2 encoder folder written by `sgdetr convert-internvideo2`"
PROCESSOR_FOLDER = (
    "a folder with the SG-DETR processor (processor_config.json and the tokenizer's tokenizer.json), as "
    "`sgdetr convert-internvideo2` writes beside the InternVideo2 weights"
)
_LISTED_KEYS = 5  # weight names quoted in an error; the rest are counted


class CheckpointError(Exception):
    """A model or processor folder (or Hub repository) that cannot give what it is loaded as: a file missing or
    unreadable, another model's config, weights that do not match the model. The message names the folder or
    file and what was expected.

    Not a ``ValueError`` (nor an ``OSError``): ``pipeline(model=folder)`` catches those from ``from_pretrained``
    to try other classes, then raises one ``ValueError`` holding every traceback as text; this one reaches the
    caller as it is."""


def _location(path: str | os.PathLike, subfolder: str = "") -> str:
    return os.path.join(os.fspath(path), subfolder) if subfolder else os.fspath(path)


def check_config_dict(
    config_dict: dict[str, Any], path: str | os.PathLike, config_class: type, expected_folder: str
) -> None:
    """``config_dict`` (read from ``path``'s ``config.json``; empty when there is none) is a config of
    ``config_class``'s ``model_type``; :class:`CheckpointError` naming ``path`` and ``expected_folder`` otherwise."""
    if not config_dict:
        raise CheckpointError(f"{path} has no {CONFIG_NAME}: expected {expected_folder}")
    if not isinstance(config_dict, dict):
        raise CheckpointError(
            f"the {CONFIG_NAME} of {path} holds a JSON {type(config_dict).__name__}, not an object of config "
            f"keys: expected {expected_folder}"
        )
    found, expected = config_dict.get("model_type"), config_class.model_type
    if found != expected:
        raise CheckpointError(
            f"{os.path.join(os.fspath(path), CONFIG_NAME)} has model_type={found!r}, but {config_class.__name__} "
            f"expects {expected!r}: {path} holds another model; pass {expected_folder}"
        )


class FolderCheckedConfigMixin:
    """Config classes whose ``from_pretrained`` refuses, before anything is built, a folder without
    ``config.json`` (transformers reads it as ``{}``: a default model with random weights) or of another
    ``model_type``. A class sets ``expected_folder``, the folder to pass instead, for the message."""

    expected_folder = "the folder of this model"

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        folder = _location(pretrained_model_name_or_path, kwargs.get("subfolder", ""))
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        check_config_dict(config_dict, folder.rstrip(os.sep), cls, cls.expected_folder)
        return config_dict, kwargs


def check_safetensors_file(path: str | os.PathLike) -> None:
    """``path`` has a valid safetensors header that covers the whole file (catches zero-byte, truncated and
    corrupt files); reads the header only."""
    try:
        with safe_open(os.fspath(path), framework="pt") as file:
            file.keys()
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({error}): it is truncated or corrupt; "
            "download or save it again"
        ) from None


def check_weights_files(folder: str | os.PathLike, expected_folder: str) -> None:
    """A local ``folder`` holds readable safetensors weights (one file, or shards listed by an index), not only
    a pickle. A file is refused (transformers would load a weights file given as a path, pickles included, and
    take a config file for weights). A Hub id (not a local path) is left to the download, whose errors name the
    repository."""
    folder = os.fspath(folder)
    if os.path.isfile(folder):
        raise CheckpointError(
            f"{folder} is a file: pass the folder that holds the model's {CONFIG_NAME} and {WEIGHTS_NAME} "
            f"({expected_folder})"
        )
    if not os.path.isdir(folder):
        return
    index = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as file:
                shards = sorted(set(json.load(file)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(
                f"{index} is not a safetensors index ({error!r}); save the model again"
            ) from None
    elif os.path.isfile(os.path.join(folder, WEIGHTS_NAME)):
        shards = [WEIGHTS_NAME]
    else:
        pickles = sorted(name for name in os.listdir(folder) if name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise CheckpointError(
                f"{folder} has no {WEIGHTS_NAME}, only pickled weights ({', '.join(pickles)}), which are never "
                f"loaded (unpickling can run code): expected {expected_folder}"
            )
        raise CheckpointError(f"{folder} has no {WEIGHTS_NAME}: expected {expected_folder}")
    for shard in shards:
        path = os.path.join(folder, shard)
        if not os.path.isfile(path):
            raise CheckpointError(f"{index} lists {shard}, which is missing; save the model again")
        check_safetensors_file(path)


def _quoted(names: Iterable[str]) -> str:
    names = sorted(names)
    listed = ", ".join(names[:_LISTED_KEYS])
    return f"{listed} and {len(names) - _LISTED_KEYS} more" if len(names) > _LISTED_KEYS else listed


def weight_problems(loading_info: dict[str, Any]) -> list[str]:
    """What ``from_pretrained(..., output_loading_info=True)`` reports as not loaded as it is, in words."""
    problems = []
    if missing := loading_info.get("missing_keys"):
        problems.append(f"{len(missing)} missing, randomly initialised ({_quoted(missing)})")
    if unexpected := loading_info.get("unexpected_keys"):
        problems.append(f"{len(unexpected)} unexpected, ignored ({_quoted(unexpected)})")
    if mismatched := loading_info.get("mismatched_keys"):
        shapes = [f"{key} {tuple(saved)} vs {tuple(wanted)}" for key, saved, wanted in mismatched]
        problems.append(f"{len(mismatched)} of another shape, randomly initialised ({_quoted(shapes)})")
    return problems + list(loading_info.get("error_msgs") or [])


def non_finite_parameters(module: torch.nn.Module) -> list[str]:
    """The names of ``module``'s floating-point parameters and buffers that hold NaN or Inf, or values whose
    float32 sum overflows (beyond any trained weight: a damaged file's random bytes are up to 3.4e38).
    One reduction per tensor; tensors not materialised (the meta device of an offloaded model) are skipped."""
    named = [
        (name, tensor)
        for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers())
        if tensor.is_floating_point() and tensor.device.type != "meta" and tensor.numel()
    ]
    with torch.no_grad():
        sums = [tensor.sum(dtype=torch.float32).cpu() for _, tensor in named]
    return [name for (name, _), total in zip(named, sums) if not torch.isfinite(total)]


def from_pretrained_checked(
    load: Callable[..., Any],
    pretrained_model_name_or_path: str | os.PathLike | None,
    *model_args,
    expected_folder: str,
    allow_missing_weights: bool = False,
    **kwargs,
):
    """``load`` (a model class's ``PreTrainedModel.from_pretrained``) with the checks of this module.

    Before anything is built: a local folder's weights must be readable safetensors (pickled weights are
    never loaded: ``use_safetensors=True``). After loading: weights missing from the file, unexpected in it or
    of another shape are a :class:`CheckpointError`, unless ``allow_missing_weights`` (then they start freshly
    initialised, with a warning), e.g. to fine-tune a pre-trained model with new heads. Weights holding NaN or
    Inf (a damaged file, or one saved from a diverged run) are a :class:`CheckpointError` in every case.
    ``ignore_mismatched_sizes=True`` given by the caller allows shape mismatches alone.
    """
    if pretrained_model_name_or_path is None:  # weights given as state_dict=...: nothing to check on disk
        return load(pretrained_model_name_or_path, *model_args, **kwargs)
    location = _location(pretrained_model_name_or_path, kwargs.get("subfolder", ""))
    check_weights_files(location, expected_folder)
    kwargs.setdefault("use_safetensors", True)
    return_loading_info = kwargs.pop("output_loading_info", False)
    allow_mismatched = kwargs.get("ignore_mismatched_sizes", False)
    # Mismatched shapes are reported with the other problems below (transformers would raise a RuntimeError).
    kwargs["ignore_mismatched_sizes"] = True
    try:
        model, loading_info = load(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
    except SafetensorError as error:  # a downloaded file (local folders were checked above)
        raise CheckpointError(
            f"the weights of {location} are not a readable safetensors file ({error}); download them again"
        ) from None
    checked = dict(loading_info)
    if allow_mismatched:
        checked["mismatched_keys"] = set()
    saved_as = getattr(model.config, "architectures", None) or []
    if saved_as and type(model).__name__ not in saved_as:
        # A part of a bigger model saved as a whole (e.g. SGDetrModel from SGDetrForMomentRetrieval's folder): the
        # other parts' weights are expected in the file, as transformers documents.
        checked["unexpected_keys"] = set()
    problems = weight_problems(checked)
    if problems:
        message = f"the weights in {location} do not match {type(model).__name__}: {'; '.join(problems)}"
        if not allow_missing_weights:
            raise CheckpointError(
                f"{message}. Expected {expected_folder}, unchanged; to start those weights fresh on "
                "purpose (fine-tuning with new heads), pass allow_missing_weights=True"
            )
        logger.warning("%s (allowed: allow_missing_weights=True)", message)
    if broken := non_finite_parameters(model):
        raise CheckpointError(
            f"the weights in {location} hold NaN, Inf or absurdly large values in {len(broken)} tensors "
            f"({_quoted(broken)}): the file is damaged, or was saved from a run that diverged; download or "
            "save it again"
        )
    return (model, loading_info) if return_loading_info else model


def resolve_device(device: str | int | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` this torch build can use (None: CUDA when available, else CPU; an int
    is a CUDA index, -1 the CPU, as in ``pipeline(device=...)``); ``ValueError`` saying why not otherwise."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int) and not isinstance(device, bool):
        device = torch.device("cpu") if device < 0 else torch.device("cuda", device)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(
            f"device {device!r} is not a torch device ({error}); use e.g. 'cpu' or 'cuda:0'"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "was built without CUDA" if torch.version.cuda is None else "sees no CUDA GPU"
            raise ValueError(
                f"device {device} asked for, but this torch ({torch.__version__}) {why}; use cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) are visible"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device} asked for, but MPS is not available in this torch build; use cpu")
    elif device.type == "cpu":
        # "cpu:0" (Accelerate's device in a multi-process CPU run) is the CPU, but moving a model there copies
        # its weights out of the memory-mapped file to other alignments, which changes outputs' last bits
        return torch.device("cpu")
    return device


__all__ = [
    "CheckpointError",
    "FolderCheckedConfigMixin",
    "check_config_dict",
    "check_safetensors_file",
    "check_weights_files",
    "from_pretrained_checked",
    "resolve_device",
    "weight_problems",
]
