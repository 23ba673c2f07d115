"""Training recipes: the paper's hyper-parameters per dataset, as YAML files inside the package.

A recipe is a flat set of keys (:class:`TrainingRecipe`) plus a ``model`` mapping of
:class:`~sgdetr_hf.SGDetrConfig` overrides. ``extends: OTHER`` starts from another recipe's values (a name
or a path), e.g. the same schedule on other features. Every key can be overridden from the command line,
either as ``--set key=value`` or as ``--key value``; values are parsed as YAML scalars/lists
(``--milestones "[2, 3]"``, ``--model.hidden_size 64``). A key that the recipe does not have is
an error listing the valid keys, so a typo never silently trains with a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..files import atomic_write_text
from ..processing_sgdetr import DEFAULT_MAX_QUERY_TOKENS

RECIPE_PACKAGE = "sgdetr_hf.training.recipes"

# The evaluation protocols of sgdetr_hf.metrics and the "brief" key each one selects checkpoints by.
DATASET_MAIN_METRICS: dict[str, str] = {
    "qvhighlights": "MR-full-mAP",
    "charades_sta": "MR-full-R1@0.7",
    "tacos": "MR-full-R1@0.7",
    "youtube_highlights": "YT-mAP",
    "tvsum": "TVSum-top5-mAP",
}

#: numpy's seed range: set_seed seeds numpy's global generator, which takes 0 <= seed < 2**32
MAX_SEED = 2**32 - 1
#: AdamW moves each weight by up to about the learning rate per step: beyond 1 any model diverges at once
MAX_LEARNING_RATE = 1.0


def brief_metric_names(dataset_name: str) -> tuple[str, ...]:
    """The ``brief`` metric keys that :func:`sgdetr_hf.metrics.compute_metrics` reports for an evaluation
    protocol on the trainer's predictions (windows and saliency scores): the valid ``main_metric`` values.

    The evaluators build these names from the constants used here (``mr_hd_metrics``: length buckets,
    highlight levels, domains) and a few literal thresholds; ``tests/training/test_recipe.py`` checks this
    list against what they report. Data can still leave a name out (a QVHighlights length bucket without
    ground-truth windows, a domain absent from the split): the trainer then says so at the evaluation.
    """
    from ..metrics.sgdetr_eval import mr_hd_metrics as metrics  # numpy only

    if dataset_name == "qvhighlights":
        return (
            *(f"MR-{bucket}-mAP" for bucket in metrics.LENGTH_BUCKETS),
            "MR-full-mAP@0.5", "MR-full-mAP@0.75", "MR-full-R1@0.5", "MR-full-R1@0.7",
            *(f"HL-min-{level}-{kind}" for level, _ in metrics.HIGHLIGHT_LEVELS for kind in ("mAP", "Hit1")),
        )  # fmt: skip
    if dataset_name in ("charades_sta", "tacos"):
        return (
            "MR-full-R1@0.3", "MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP", "MR-full-mAP@0.5",
            "MR-full-mAP@0.75", "MR-full-mIoU",
        )  # fmt: skip
    if dataset_name == "youtube_highlights":
        return ("YT-mAP", *(f"YT-mAP-{domain}" for domain in metrics.YOUTUBE_DOMAINS))
    if dataset_name == "tvsum":
        return ("TVSum-top5-mAP", *(f"TVSum-top5-mAP-{domain}" for domain in metrics.TVSUM_DOMAINS))
    raise ValueError(
        f"unknown evaluation protocol {dataset_name!r}; use one of {sorted(DATASET_MAIN_METRICS)}"
    )


@dataclasses.dataclass
class TrainingRecipe:
    """Everything a training run needs besides the code. Units are given per field."""

    name: str = "custom"
    # -- data
    dataset_name: str = (
        "qvhighlights"  # evaluation protocol of sgdetr_hf.metrics (one of DATASET_MAIN_METRICS)
    )
    dataset_path: str | None = None  # local dataset folder or Hub dataset id, read with datasets.load_dataset
    dataset_config: str | None = None  # configuration name inside that dataset repo
    dataset_revision: str | None = None  # Hub revision (branch, tag or commit) for reproducible runs
    train_split: str = "train"
    eval_split: str | None = "validation"  # None: no evaluation (e.g. pre-training)
    domain: str | None = None  # YouTube Highlights / TVSum: train one model per domain
    max_train_samples: int | None = None  # debugging: keep the first N training rows (>= 1; null: all)
    max_eval_samples: int | None = None  # the same for the evaluation split
    num_workers: int = 0  # DataLoader worker processes per training process
    # -- optimisation (paper §4.4)
    epochs: int = 150
    max_steps: int = 0  # > 0: stop after this many optimizer steps instead (the last epoch may end early)
    batch_size: int = 128  # global batch per optimizer step, summed over processes and accumulation steps
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4  # in (0, 1]
    weight_decay: float = 0.1  # AdamW, applied to every parameter
    adam_beta1: float = 0.9  # in [0, 1)
    adam_beta2: float = 0.999  # in [0, 1)
    adam_epsilon: float = 1e-8  # >= 0
    warmup_iters: int = 45  # optimizer steps of linear warm-up
    warmup_factor: float = 0.001  # lr factor at step 0 of the warm-up
    milestones: list[int] = dataclasses.field(default_factory=lambda: [100, 125])  # epochs
    gamma: float = 0.5  # lr factor applied at each milestone
    max_grad_norm: float = 0.1  # global L2 norm to clip to (> 0); 0 disables clipping
    mixed_precision: str = "auto"  # auto | no | bf16 | fp16 (auto: the launcher's, else bf16 on a bf16 GPU)
    torch_compile: bool = False  # torch.compile the model in place (its state dict and checkpoints unchanged)
    retain_cpu_memory: bool = True  # CPU runs: malloc keeps freed memory for reuse (sgdetr_hf.cpu_memory)
    seed: int = 42  # 0 <= seed < 2**32 (numpy's range)
    # -- evaluation and checkpoints
    eval_every_epochs: int = 1
    eval_every_steps: int = 0  # > 0: evaluate every this many optimizer steps instead, and at the end
    # key of the metrics' "brief" section (brief_metric_names); higher is better. "": the dataset's
    # (DATASET_MAIN_METRICS)
    main_metric: str = ""
    select_best: bool = True  # False: keep the last evaluated model (pre-training, Charades-STA)
    eval_top_k: int = 10  # predicted windows kept per query (>= 1)
    max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS  # token cap of the collator and the saved processor
    # round predicted windows to this grid in seconds (> 0; QVHighlights: 2 s); null: no rounding
    window_round_seconds: float | None = None
    output_dir: str = "outputs/run"
    save_every_steps: int = 0  # 0: resumable state only at each epoch end
    checkpoints_total_limit: int = 2  # resumable states kept on disk
    logging_steps: int = 10  # optimizer steps between tracker logs
    init_from: str | None = None  # fine-tune: model folder or Hub id whose weights initialise the model
    allow_missing_weights: bool = (
        False  # init_from may lack new heads' weights (they start fresh) or hold extra ones
    )
    processor_path: str | None = None  # processor folder or Hub id saved next to the best model
    # -- model: SGDetrConfig overrides (keys of SGDetrConfig)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.main_metric and self.dataset_name in DATASET_MAIN_METRICS:
            self.main_metric = DATASET_MAIN_METRICS[self.dataset_name]
        self.validate()

    def validate(self) -> None:
        """Check values that YAML types alone cannot; raise ``ValueError`` naming the key.

        Everything that can be checked without the data is checked here, so a bad value fails before a run
        loads anything or writes a file (not after an epoch, or as a NaN loss).
        """
        if self.dataset_name not in DATASET_MAIN_METRICS:
            raise ValueError(
                f"dataset_name={self.dataset_name!r} is not an evaluation protocol; "
                f"use one of {sorted(DATASET_MAIN_METRICS)}"
            )
        names = brief_metric_names(self.dataset_name)
        if self.main_metric not in names:
            close = difflib.get_close_matches(self.main_metric, names, n=1)
            raise ValueError(
                f"main_metric={self.main_metric!r} is not a {self.dataset_name} metric"
                f"{f' (did you mean {close[0]!r}?)' if close else ''}; use one of {list(names)}"
            )
        # NaN passes every comparison below, and neither NaN nor Infinity can be written to the run's JSON
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{field.name} must be a finite number, got {value}")
        positive = (
            "epochs",
            "batch_size",
            "gradient_accumulation_steps",
            "eval_every_epochs",
            "logging_steps",
            "eval_top_k",
            "max_query_tokens",
        )
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_train_samples", "max_eval_samples"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1 (or null for every row), got {getattr(self, key)}")
        for key in ("learning_rate", "warmup_factor", "gamma"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.learning_rate > MAX_LEARNING_RATE:
            raise ValueError(
                f"learning_rate must be <= {MAX_LEARNING_RATE:g} (AdamW moves every weight by about the "
                f"learning rate per step: the model would diverge), got {self.learning_rate}"
            )
        for key in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if self.adam_epsilon < 0:
            raise ValueError(f"adam_epsilon must be >= 0, got {self.adam_epsilon}")
        if self.max_grad_norm < 0:
            raise ValueError(
                f"max_grad_norm must be > 0 (the norm to clip to), or 0 for no clipping; got {self.max_grad_norm}"
            )
        if self.window_round_seconds is not None and not self.window_round_seconds > 0:
            raise ValueError(
                f"window_round_seconds must be > 0 (the grid in seconds), or null for no rounding; "
                f"got {self.window_round_seconds}"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in [0, 2**32 - 1] (numpy's seed range), got {self.seed}")
        for key, value in self.model.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"model.{key} must be a finite number, got {value}")
        for key in (
            "warmup_iters",
            "weight_decay",
            "max_steps",
            "eval_every_steps",
            "save_every_steps",
            "num_workers",
            "checkpoints_total_limit",
        ):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.checkpoints_total_limit < 1:
            raise ValueError("checkpoints_total_limit must be >= 1 (the latest state is needed to resume)")
        if list(self.milestones) != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be increasing epoch numbers >= 1, got {self.milestones}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.allow_missing_weights and not self.init_from:
            raise ValueError(
                "allow_missing_weights applies to the weights of init_from, and init_from is not set"
            )
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"batch_size={self.batch_size} is the global batch per optimizer step and must be divisible "
                f"by gradient_accumulation_steps={self.gradient_accumulation_steps}"
            )

    @property
    def micro_batch_size(self) -> int:
        """Samples per forward pass summed over processes (the training DataLoader's batch size)."""
        return self.batch_size // self.gradient_accumulation_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def available_recipes() -> list[str]:
    """Names of the recipes shipped in the package (``--recipe NAME``)."""
    return sorted(
        p.name[: -len(".yaml")] for p in resources.files(RECIPE_PACKAGE).iterdir() if p.name.endswith(".yaml")
    )


def _read_recipe_file(name_or_path: str, _seen: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """The recipe's name and values, with those of the recipe it ``extends`` underneath (its own win;
    ``model`` mappings are merged key by key)."""
    name, values = _read_one_recipe_file(name_or_path)
    base = values.pop("extends", None)
    if base is None:
        return name, values
    if not isinstance(base, str) or base in _seen or base == name_or_path:
        raise ValueError(
            f"recipe {name_or_path}: extends must name another recipe, without cycles; got {base!r}"
        )
    _, base_values = _read_recipe_file(base, (*_seen, name_or_path))
    model = {**(base_values.get("model") or {}), **(values.get("model") or {})}
    return name, {**base_values, **values, "model": model}


def _read_one_recipe_file(name_or_path: str) -> tuple[str, dict[str, Any]]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ValueError(f"recipe file {path} does not exist")
        text, name = path.read_text(), path.stem
    else:
        if name_or_path not in available_recipes():
            raise ValueError(
                f"unknown recipe {name_or_path!r}: use one of {available_recipes()} or a path to a .yaml file"
            )
        text, name = (
            resources.files(RECIPE_PACKAGE).joinpath(f"{name_or_path}.yaml").read_text(),
            name_or_path,
        )
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"recipe {name_or_path} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"recipe {name_or_path} must be a YAML mapping of keys to values")
    return name, values


def _unknown_key_error(key: str, valid: list[str], where: str) -> ValueError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {where} key {key!r}.{hint} Valid keys: {', '.join(sorted(valid))}")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation; ints are accepted for floats. Raise ValueError otherwise."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(annotation):
            return None
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _coerce(key, value, options[0])
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{key} must be a list such as [1, 2], got {value!r}")
        (item,) = typing.get_args(annotation)
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if annotation is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # e.g. --dataset_revision 1234
    if annotation is Any or (
        isinstance(value, annotation) and not (annotation is int and isinstance(value, bool))
    ):
        return value
    raise ValueError(f"{key} must be of type {annotation.__name__}, got {value!r} ({type(value).__name__})")


def parse_override_value(text: str) -> Any:
    """Parse a command-line value as a YAML scalar or flow list (``3`` -> 3, ``[1, 2]`` -> [1, 2])."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_override_tokens(tokens: list[str]) -> dict[str, Any]:
    """Turn ``["--epochs", "3", "--set", "a=1", "b=2", "--lr=0.1", "--flag"]`` into a key -> value dict.

    ``--key value`` and ``--key=value`` set one key (dashes in the key become underscores);
    ``--set k=v [k=v ...]`` sets several; a ``--key`` followed by another option is ``True``.
    """
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument {token!r}: options are --key value or --set key=value")
        if token == "--set":
            i += 1
            if i >= len(tokens) or "=" not in tokens[i]:
                raise ValueError("--set needs at least one key=value")
            while i < len(tokens) and not tokens[i].startswith("--"):
                if "=" not in tokens[i]:
                    raise ValueError(f"--set expects key=value, got {tokens[i]!r}")
                key, value = tokens[i].split("=", 1)
                overrides[key.strip().replace("-", "_")] = parse_override_value(value)
                i += 1
            continue
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value = tokens[i + 1]
                i += 1
            else:
                value = "true"
        overrides[key.replace("-", "_")] = parse_override_value(value)
        i += 1
    return overrides


def load_recipe(
    name_or_path: str,
    overrides: dict[str, Any] | None = None,
    valid_model_keys: typing.Iterable[str] | None = None,
) -> TrainingRecipe:
    """Load a packaged recipe (``"qvhighlights"``) or a YAML file, then apply ``overrides``.

    Args:
        name_or_path: a name from :func:`available_recipes` or a path ending in ``.yaml``.
        overrides: ``{key: value}``; ``model.<key>`` sets a model-config key. Values already parsed
            (see :func:`parse_override_tokens`).
        valid_model_keys: the keys of the model config; when given, unknown ``model`` keys are errors.

    Raises:
        ValueError: unknown recipe or key, a value of the wrong type, or an invalid value.
    """
    name, values = _read_recipe_file(name_or_path)
    fields = {f.name: f for f in dataclasses.fields(TrainingRecipe)}
    hints = typing.get_type_hints(TrainingRecipe)
    values.setdefault("name", name)
    values["model"] = dict(values.get("model") or {})
    for key, value in (overrides or {}).items():
        if key.startswith("model."):
            values["model"][key[len("model.") :]] = value
        elif key == "model":
            values["model"].update(_coerce("model", value, dict[str, Any]))
        else:
            values[key] = value
    checked = {}
    for key, value in values.items():
        if key not in fields:
            raise _unknown_key_error(key, list(fields), "recipe")
        checked[key] = _coerce(key, value, hints[key])
    if valid_model_keys is not None:
        valid = list(valid_model_keys)
        for key in checked["model"]:
            if key not in valid:
                raise _unknown_key_error(key, valid, "model config (model.<key>)")
    return TrainingRecipe(**checked)  # an unset main_metric is the dataset's


def save_recipe(recipe: TrainingRecipe, path: str | Path) -> None:
    """Write the resolved recipe as YAML (atomically), so a run records exactly what it trained with."""
    atomic_write_text(Path(path), yaml.safe_dump(recipe.to_dict(), sort_keys=False))


#: Keys a resumed run may change, because they cannot change what it computes or selects:
#: where its files go (output_dir; name, the tracker's project name), when it logs and keeps checkpoints
#: (logging_steps; save_every_steps and checkpoints_total_limit: saving reads the random states, it draws
#: none), and how the host feeds it (num_workers: the collator's draws are a function of (seed, epoch,
#: sample) and the DataLoader draws its base seed from the global RNG whatever the worker count;
#: retain_cpu_memory: malloc's trimming). Every other key changes the trajectory or what the run selects and
#: records, and a resume refuses it: the data and its order (dataset_*, *_split, domain, max_*_samples,
#: seed; a dataset_path holding the run's files, a moved folder, passes: the trainer compares their digest),
#: the model and its start (model, init_from, allow_missing_weights), the optimisation and its
#: length (epochs, max_steps, batch sizes, every optimiser and schedule value, mixed_precision,
#: torch_compile: other kernels round otherwise), the evaluation (which steps, the metric and the
#: post-processing decide the best model, and an evaluation's data loader draws from the RNG), and what is
#: saved with the model (processor_path, max_query_tokens).
RESUME_FREE_KEYS = frozenset(
    {
        "name",
        "output_dir",
        "logging_steps",
        "save_every_steps",
        "checkpoints_total_limit",
        "num_workers",
        "retain_cpu_memory",
    }
)


_UNSET = object()  # a model key one side does not set
#: keys naming a local folder (or a Hub id): the same folder written another way (relative, absolute) is the same
_PATH_KEYS = ("dataset_path", "init_from", "processor_path")


def _same_folder(first: Any, second: Any) -> bool:
    if not (isinstance(first, str) and isinstance(second, str)):
        return False
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them is no local path (a Hub id, or gone)
        return False


def _show(value: Any) -> str:
    return "(not set)" if value is _UNSET else repr(value)


def _field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def recipe_differences(
    recorded: typing.Mapping[str, Any], recipe: TrainingRecipe, same: typing.Collection[str] = ()
) -> list[str]:
    """The settings in which ``recipe`` differs from ``recorded`` (a run's ``TrainingRecipe.to_dict()``),
    as ``"key: <recorded> (run) -> <now>"``, model keys as ``model.<key>``; keys in :data:`RESUME_FREE_KEYS`
    and ``same`` (known to name the same thing, e.g. a moved dataset folder) are left out, and so is a folder
    written another way (``data/qvh`` and its absolute path). A key missing from ``recorded`` (a run recorded
    before the key existed) had its default."""
    defaults = {field.name: _field_default(field) for field in dataclasses.fields(TrainingRecipe)}
    current = recipe.to_dict()
    pairs = [
        (key, recorded.get(key, defaults[key]), value)
        for key, value in current.items()
        if key not in RESUME_FREE_KEYS and key not in same and key != "model"
    ]
    recorded_model, model = dict(recorded.get("model") or {}), current["model"]
    pairs += [
        (f"model.{key}", recorded_model.get(key, _UNSET), model.get(key, _UNSET))
        for key in sorted(set(recorded_model) | set(model))
    ]
    return [
        f"{key}: {_show(before)} (run) -> {_show(now)}"
        for key, before, now in pairs
        if before != now and not (key in _PATH_KEYS and _same_folder(before, now))
    ]
