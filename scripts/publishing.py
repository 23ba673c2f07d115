"""Building and uploading the release's Hub repositories: the model, the datasets, the metric, the Space.

Release code, used by ``scripts/push_to_hub.py``: it reads ``hub/`` and ``model_card.md`` from this source
checkout, so it is not part of the installed package (which keeps only :data:`DEFAULT_MODEL_REPO`, in
``sgdetr_hf.hub_ids``).

Publishing is split in two:

- **build**: write the complete repository as a local folder, exactly as it will look on the Hub
  (:func:`build_model_repo`, :func:`build_space_repo`); a dataset folder is built by
  ``scripts/build_benchmark_dataset.py`` and only checked here (:func:`dataset_folder`: its card's
  ``configs`` must point at data that is there), the metric folder is located (:func:`source_folder`);
- **upload**: :func:`upload_repo` makes two ``huggingface_hub`` calls, ``create_repo(exist_ok=True)`` and
  ``upload_folder`` (resumable, multi-commit in huggingface_hub 2.x). :func:`upload_plan` lists exactly the
  files and sizes ``upload_folder`` would send, with the same selection code
  (``huggingface_hub.utils.filter_repo_objects`` and its default ignores), for ``--dry-run``.

The model card is rendered from ``model_card.md`` at the top of the source tree, a Jinja template for
``huggingface_hub.ModelCard.from_template``. Its YAML metadata (``model-index``, which the Hub shows as this
model's results) holds only numbers measured for the weights being published: the run's own
``eval_results.json`` in the model folder, or a ``--results`` file; with neither, the card has no
``model-index``. The paper's numbers are in the card's prose, labelled as the paper's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import DatasetCard, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
from huggingface_hub.utils import filter_repo_objects
from transformers.dynamic_module_utils import get_relative_import_files

from sgdetr_hf import SGDetrConfig, SGDetrForMomentRetrieval, VideoMomentRetrievalPipeline
from sgdetr_hf.files import atomic_write_text
from sgdetr_hf.hub_ids import DEFAULT_MODEL_REPO
from sgdetr_hf.pipeline_sgdetr import ENCODER_SUBFOLDER
from sgdetr_hf.training.checkpointing import replace_dir

logger = logging.getLogger(__name__)

#: The source checkout (``scripts/publishing.py`` -> the repository root).
SOURCE_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = SOURCE_ROOT / "src" / "sgdetr_hf"

REPO_KINDS = ("model", "dataset", "metric", "space")
#: Hub repository type of each kind: an ``evaluate`` metric is published as a Gradio Space.
HUB_REPO_TYPES = {"model": "model", "dataset": "dataset", "metric": "space", "space": "space"}
#: Never uploaded: caches, editor and OS debris, training state (optimizer, RNG, scheduler).
IGNORE_PATTERNS = [
    "__pycache__/*",
    "**/__pycache__/*",
    "*.pyc",
    ".DS_Store",
    "**/.DS_Store",
    ".ipynb_checkpoints/*",
    "checkpoint-*/*",
    "optimizer.*",
    "scheduler.*",
    "rng_state*",
    "*.tmp",
]

#: Not copied into a build folder (bytecode caches).
_CACHE_PATTERNS = ("__pycache__", "*.pyc")
_COPY_IGNORE = shutil.ignore_patterns(*_CACHE_PATTERNS)

#: The Auto classes a converted encoder's files must name for the published ``encoder/`` to load with
#: ``trust_remote_code=True`` (the pipeline loads its model and its processor).
ENCODER_AUTO_CLASSES = {
    "config.json": ("AutoConfig", "AutoModel"),
    "processor_config.json": ("AutoProcessor",),
}

DEFAULT_SPACE_REPO = "sgdetr-hf/sg-detr-demo"
DEFAULT_DATASET_REPOS = ("sgdetr-hf/qvhighlights", "sgdetr-hf/intervid-mr")
#: The Space reads the model it serves from this variable (set on the Space by :func:`upload_repo`).
SPACE_MODEL_VARIABLE = "SGDETR_MODEL"

PAPER_URL = "https://arxiv.org/abs/2410.01615"
LICENSE = "cc-by-nc-sa-4.0"  # the weights inherit QVHighlights' licence; the code is Apache-2.0


@dataclass(frozen=True)
class MetricSpec:
    """How one metric appears in ``model-index``: its type id and a readable name."""

    type: str
    name: str


#: Metric keys of the project's evaluation (the "brief" of ``sgdetr_hf.metrics.compute_metrics``).
METRICS: dict[str, MetricSpec] = {
    "MR-full-R1@0.5": MetricSpec("recall", "MR R1@0.5"),
    "MR-full-R1@0.7": MetricSpec("recall", "MR R1@0.7"),
    "MR-full-mAP@0.5": MetricSpec("map", "MR mAP@0.5"),
    "MR-full-mAP@0.75": MetricSpec("map", "MR mAP@0.75"),
    "MR-full-mAP": MetricSpec("map", "MR mAP (avg over IoU 0.5:0.95)"),
    "HL-min-VeryGood-mAP": MetricSpec("map", "HD mAP (>= Very Good)"),
    "HL-min-VeryGood-Hit1": MetricSpec("hit@1", "HD HIT@1 (>= Very Good)"),
    "MR-full-mIoU": MetricSpec("miou", "MR mIoU"),
}


@dataclass(frozen=True)
class ResultSet:
    """Metric values of one model on one dataset split, with where they come from."""

    dataset_name: str
    dataset_id: str
    split: str
    metrics: Mapping[str, float]
    source: str
    source_url: str | None = None


def _paper(table: str) -> str:
    return f"SG-DETR paper (arXiv:2410.01615), {table}"


#: The paper's own numbers, per training setting of a checkpoint (``--paper-setting``).
PAPER_RESULTS: dict[str, list[ResultSet]] = {
    "qvhighlights": [
        ResultSet(
            "QVHighlights",
            DEFAULT_DATASET_REPOS[0],
            "test",
            {
                "MR-full-R1@0.5": 72.2,
                "MR-full-R1@0.7": 56.6,
                "MR-full-mAP@0.5": 73.2,
                "MR-full-mAP@0.75": 55.8,
                "MR-full-mAP": 54.1,
                "HL-min-VeryGood-mAP": 43.76,
                "HL-min-VeryGood-Hit1": 69.13,
            },
            _paper("Table 3"),
            PAPER_URL,
        ),
        ResultSet(
            "QVHighlights",
            DEFAULT_DATASET_REPOS[0],
            "validation",
            {
                "MR-full-mAP@0.5": 73.52,
                "MR-full-mAP@0.75": 57.91,
                "MR-full-mAP": 55.64,
                "HL-min-VeryGood-mAP": 43.91,
                "HL-min-VeryGood-Hit1": 71.47,
            },
            _paper("Table 1 (mean of 3 runs)"),
            PAPER_URL,
        ),
    ],
    "qvhighlights-pretrained": [
        ResultSet(
            "QVHighlights",
            DEFAULT_DATASET_REPOS[0],
            "test",
            {
                "MR-full-R1@0.5": 74.2,
                "MR-full-R1@0.7": 60.4,
                "MR-full-mAP@0.5": 76.2,
                "MR-full-mAP@0.75": 60.8,
                "MR-full-mAP": 58.8,
                "HL-min-VeryGood-mAP": 44.7,
                "HL-min-VeryGood-Hit1": 71.0,
            },
            _paper("Table 3, with InterVid-MR pre-training"),
            PAPER_URL,
        )
    ],
    "charades-sta": [
        ResultSet(
            "Charades-STA",
            "sgdetr-hf/charades-sta",
            "test",
            {"MR-full-R1@0.5": 70.2, "MR-full-R1@0.7": 49.5, "MR-full-mIoU": 59.1},
            _paper("Table 4"),
            PAPER_URL,
        )
    ],
    "tacos": [
        ResultSet(
            "TACoS",
            "sgdetr-hf/tacos",
            "test",
            {"MR-full-R1@0.5": 44.7, "MR-full-R1@0.7": 29.9, "MR-full-mIoU": 40.9},
            _paper("Table 4"),
            PAPER_URL,
        )
    ],
}


#: The feature dataset repositories each paper setting trains on: the card's ``datasets`` metadata.
TRAINING_DATASETS: dict[str, tuple[str, ...]] = {
    "qvhighlights": (DEFAULT_DATASET_REPOS[0],),
    "qvhighlights-pretrained": DEFAULT_DATASET_REPOS,  # pre-trained on InterVid-MR, then QVHighlights
    "charades-sta": ("sgdetr-hf/charades-sta",),
    "tacos": ("sgdetr-hf/tacos",),
}


def load_measured_results(path: str | Path) -> ResultSet:
    """Read our own evaluation of a checkpoint.

    The file is JSON: ``{"dataset": "QVHighlights", "dataset_id": "org/qvhighlights-features",
    "split": "validation", "metrics": {"MR-full-mAP": 41.2, ...}, "source": "how it was measured"}``;
    ``metrics`` keys are the evaluation's names (unknown names are kept as they are); an optional
    ``source_url`` links the evaluation (default: the model repository).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the results file {path}: {error}") from None
    missing = {"dataset", "dataset_id", "split", "metrics"} - set(data)
    if missing:
        raise ValueError(f"results file {path} lacks {sorted(missing)}; see load_measured_results' docstring")
    metrics = data["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError(f"results file {path}: 'metrics' must be a non-empty object of name -> number")
    bad = {k: v for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
    if bad:
        raise ValueError(f"results file {path}: metric values must be numbers, got {bad}")
    return ResultSet(
        data["dataset"],
        data["dataset_id"],
        data["split"],
        {k: float(v) for k, v in metrics.items()},
        data.get("source", "this release's evaluation script"),
        data.get("source_url"),
    )


#: ``dataset_name`` of a training recipe -> (the dataset's name in a card, its feature dataset repository)
RUN_DATASETS = {
    "qvhighlights": ("QVHighlights", DEFAULT_DATASET_REPOS[0]),
    "charades_sta": ("Charades-STA", "sgdetr-hf/charades-sta"),
    "tacos": ("TACoS", "sgdetr-hf/tacos"),
    "youtube_highlights": ("YouTube Highlights", "sgdetr-hf/youtube-highlights"),
    "tvsum": ("TVSum", "sgdetr-hf/tvsum"),
}
RUN_RESULTS_NAME = "eval_results.json"  # written beside the weights by the trainer (save_model_dir)
RUN_RECIPE_NAME = "training_recipe.yaml"


def load_run_results(model_dir: str | Path) -> ResultSet | None:
    """The evaluation that the training run saved with these weights (``eval_results.json``: the metrics
    of the recipe's ``dataset_name`` on its ``eval_split``, from ``training_recipe.yaml`` beside it), or
    ``None`` when the folder has none (e.g. random or converted weights)."""
    model_dir = Path(model_dir)
    results_path, recipe_path = model_dir / RUN_RESULTS_NAME, model_dir / RUN_RECIPE_NAME
    if not results_path.is_file():
        return None
    try:
        brief = json.loads(results_path.read_text(encoding="utf-8"))["brief"]
        recipe = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
        dataset_name, split = recipe["dataset_name"], recipe["eval_split"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as error:
        raise ValueError(
            f"cannot tell what {results_path} measured ({type(error).__name__}: {error}): it needs the "
            f"metrics' 'brief' and {recipe_path.name} beside it with dataset_name and eval_split, as a "
            "training run writes them; or pass --results FILE"
        ) from None
    if not isinstance(brief, dict) or not brief:
        raise ValueError(f"{results_path}: 'brief' must be a non-empty object of metric -> number")
    # the card's metrics (METRICS) when the run has them, so that model-index stays readable
    named = {key: float(value) for key, value in brief.items() if key in METRICS}
    display_name, dataset_id = RUN_DATASETS.get(dataset_name, (dataset_name, dataset_name))
    return ResultSet(
        display_name,
        dataset_id,
        split,
        named or {key: float(value) for key, value in brief.items()},
        f"the training run's evaluation of these weights ({RUN_RESULTS_NAME})",
    )


def _eval_results(results: list[ResultSet]) -> list[EvalResult]:
    """One ``model-index`` entry per metric; ``MR-*`` keys are moment retrieval, ``HL-*`` highlight detection."""
    tasks = {
        True: ("video-moment-retrieval", "Moment retrieval"),
        False: ("highlight-detection", "Highlight detection"),
    }
    entries = []
    for result in results:
        for key, value in result.metrics.items():
            spec = METRICS.get(key, MetricSpec(key.lower(), key))
            task_type, task_name = tasks[key.startswith("MR")]
            entries.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=result.dataset_id,
                    dataset_name=result.dataset_name,
                    dataset_split=result.split,
                    metric_type=spec.type,
                    metric_name=spec.name,
                    metric_value=value,
                    source_name=result.source,
                    source_url=result.source_url,
                )
            )
    return entries


def _measured_section(measured: ResultSet | None) -> str:
    if measured is None:
        return (
            "Not measured yet: these weights have not been evaluated, so the card gives no number for them "
            "and has no model-index metadata (the paper's numbers above are the paper's, not these weights')."
        )
    rows = "\n".join(
        f"| {METRICS.get(k, MetricSpec(k, k)).name} | {v:.2f} |" for k, v in measured.metrics.items()
    )
    return (
        f"{measured.dataset_name} `{measured.split}` split, measured by {measured.source}:\n\n"
        f"| metric | value |\n|---|---|\n{rows}"
    )


def _paper_setting_sentence(paper_setting: str) -> str:
    sources = "; ".join(f"{r.dataset_name} {r.split}: {r.source}" for r in PAPER_RESULTS[paper_setting])
    return f"This checkpoint follows the paper's `{paper_setting}` setting ({sources})."


def render_model_card(
    repo_id: str = DEFAULT_MODEL_REPO,
    space_id: str = DEFAULT_SPACE_REPO,
    paper_setting: str = "qvhighlights",
    measured: ResultSet | None = None,
    dataset_ids: tuple[str, ...] | None = None,
    model_config: Mapping[str, Any] | None = None,
    template_path: str | Path = SOURCE_ROOT / "model_card.md",
) -> ModelCard:
    """The model repository's README: ``model_card.md`` rendered with YAML metadata.

    Args:
        repo_id / space_id: where the model and its demo live on the Hub.
        paper_setting: key of :data:`PAPER_RESULTS`, the paper's setting that this checkpoint reproduces
            (named in the card's prose, beside the paper's numbers).
        measured: the evaluation of these weights, the card's only ``model-index`` entries (``None``: the
            card says they were not measured and has no ``model-index``).
        dataset_ids: the feature dataset repositories it was trained on (default: the paper setting's,
            :data:`TRAINING_DATASETS`).
        model_config: the checkpoint's config (clip length, clip cap, feature sizes); defaults of
            ``SGDetrConfig`` when ``None``.
    """
    if paper_setting not in PAPER_RESULTS:
        raise ValueError(f"unknown paper_setting {paper_setting!r}; choose one of {sorted(PAPER_RESULTS)}")
    if model_config is None:
        model_config = SGDetrConfig().to_dict()
    if dataset_ids is None:
        dataset_ids = TRAINING_DATASETS[paper_setting]
    if measured is not None and measured.source_url is None:
        # model-index wants a link with every source: ours is this repository
        measured = dataclasses.replace(measured, source_url=f"https://huggingface.co/{repo_id}")
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="transformers",
        license=LICENSE,
        tags=["video-moment-retrieval", "highlight-detection", "video-text", "sg-detr", "custom_code"],
        datasets=list(dataset_ids),
        metrics=sorted({spec.type for spec in METRICS.values()}),
        base_model=None,
        eval_results=_eval_results([measured]) if measured else None,
    )
    clip_length = float(model_config["clip_length"])
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        repo_id=repo_id,
        space_id=space_id,
        our_results=_measured_section(measured),
        paper_setting=_paper_setting_sentence(paper_setting),
        dataset_links=", ".join(f"[`{d}`](https://huggingface.co/datasets/{d})" for d in dataset_ids),
        clip_length=f"{clip_length:g}",
        max_num_clips=model_config["max_num_clips"],
        max_seconds=f"{clip_length * model_config['max_num_clips']:g}",
        video_feature_dim=model_config["video_feature_dim"],
        text_feature_dim=model_config["text_feature_dim"],
    )


# ------------------------------------------------------------------------------------------ build
@contextlib.contextmanager
def _building(out_dir: Path) -> Iterator[Path]:
    """A scratch folder beside ``out_dir`` (same file system) to build a repository in; on success it replaces
    ``out_dir``, on error it is removed. ``out_dir`` may be new, empty or an earlier build: a folder holding
    anything the build does not write (it may be the user's) is refused, never deleted."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file: give the folder to write the repository to")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield build
        foreign = (
            sorted({p.name for p in out_dir.iterdir()} - {p.name for p in build.iterdir()})
            if out_dir.exists()
            else []
        )
        if foreign:
            raise FileExistsError(
                f"{out_dir} holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, which a build "
                "does not write: it is not an earlier build; give a new or empty folder"
            )
        replace_dir(build, out_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def build_model_repo(
    model_dir: str | Path,
    out_dir: str | Path,
    repo_id: str = DEFAULT_MODEL_REPO,
    space_id: str = DEFAULT_SPACE_REPO,
    paper_setting: str = "qvhighlights",
    measured: ResultSet | None = None,
    encoder_dir: str | Path | None = None,
    source_root: Path = SOURCE_ROOT,
) -> Path:
    """Write the complete model repository for the trained model in ``model_dir`` to ``out_dir``.

    The folder holds the safetensors weights and ``config.json`` (with ``auto_map`` and ``custom_pipelines``),
    every remote-code ``.py`` module the pipeline needs, the InternVideo2 encoder (model + processor, with
    the package's current remote code) under ``encoder/``, ``handler.py`` and ``requirements.txt`` from
    ``hub/model/`` and the rendered ``README.md``, so that ``pipeline(model=out_dir, trust_remote_code=True)``
    runs on a video without this package.

    Args:
        model_dir: a saved ``SGDetrForMomentRetrieval`` folder.
        encoder_dir: a converted InternVideo2 folder (``sgdetr convert-internvideo2``); default ``model_dir/encoder``.
        repo_id, space_id, paper_setting, measured: what the model card says (:func:`render_model_card`);
            ``measured`` defaults to the run's own evaluation saved with the weights (:func:`load_run_results`).
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    encoder_dir = Path(encoder_dir) if encoder_dir is not None else model_dir / ENCODER_SUBFOLDER
    if not (model_dir / "config.json").is_file():
        raise ValueError(
            f"{model_dir} is not a saved model folder (no config.json); train or convert one first"
        )
    if not (encoder_dir / "config.json").is_file():
        raise ValueError(
            f"no InternVideo2 encoder at {encoder_dir}: pass --encoder DIR (a folder written by sgdetr convert-internvideo2)"
        )
    if measured is None:
        measured = load_run_results(model_dir)
    model = SGDetrForMomentRetrieval.from_pretrained(model_dir)
    with _building(out_dir) as build:
        # Pipeline.save_pretrained writes the weights, config.json with "custom_pipelines" and every .py
        # module the pipeline imports; the encoder's files are copied (never loaded here), its code refreshed.
        VideoMomentRetrievalPipeline(model=model, encoder=False).save_pretrained(build)
        _copy_encoder(encoder_dir, build / ENCODER_SUBFOLDER)
        for name in ("handler.py", "requirements.txt"):
            shutil.copy2(source_root / "hub" / "model" / name, build / name)
        card = render_model_card(
            repo_id,
            space_id,
            paper_setting,
            measured,
            model_config=model.config.to_dict(),
            template_path=source_root / "model_card.md",
        )
        atomic_write_text(build / "README.md", str(card))
    return out_dir


def _remote_code_module(path: Path, auto_class: str) -> str:
    """The file of this package's module that ``auto_map[auto_class]`` of the JSON file ``path`` names."""
    auto_map = json.loads(path.read_text(encoding="utf-8")).get("auto_map", {}) if path.is_file() else {}
    reference = auto_map.get(auto_class)
    module_name, _, class_name = str(reference).rpartition(".")
    try:
        module = importlib.import_module(f"sgdetr_hf.{module_name}")
    except ImportError:
        module = None
    if not module_name or not hasattr(module, class_name):
        found = f"auto_map {auto_class}: {reference!r}" if path.is_file() else "no such file"
        raise ValueError(
            f"{path} names no {auto_class} of this package ({found}), so the published encoder would not load "
            "with trust_remote_code=True; convert the encoder again with sgdetr convert-internvideo2"
        )
    return module.__file__


def _copy_encoder(encoder_dir: Path, destination: Path) -> None:
    """Copy a converted InternVideo2 folder with this package's current remote code in place of its ``.py``
    files: an encoder converted by an earlier release holds that release's code, which is what
    ``trust_remote_code=True`` would run from the published repository."""
    shutil.copytree(encoder_dir, destination, ignore=shutil.ignore_patterns(*_CACHE_PATTERNS, "*.py"))
    modules = {
        _remote_code_module(encoder_dir / name, auto_class)
        for name, auto_classes in ENCODER_AUTO_CLASSES.items()
        for auto_class in auto_classes
    }
    for module_file in modules.union(*map(get_relative_import_files, modules)):
        shutil.copy2(module_file, destination / Path(module_file).name)


def build_space_repo(
    out_dir: str | Path,
    model_repo_id: str = DEFAULT_MODEL_REPO,
    source_root: Path = SOURCE_ROOT,
) -> Path:
    """Write the demo Space: ``app.py``, its ``README.md`` (pointing at ``model_repo_id``),
    ``requirements.txt`` and a copy of the ``sgdetr_hf`` package (the app imports it; the Space cannot
    pip-install it from a registry)."""
    out_dir = Path(out_dir)
    space_src = source_root / "hub" / "space"
    with _building(out_dir) as build:
        for name in ("app.py", "requirements.txt"):
            shutil.copy2(space_src / name, build / name)
        card = (
            (space_src / "README.md").read_text(encoding="utf-8").replace(DEFAULT_MODEL_REPO, model_repo_id)
        )
        atomic_write_text(build / "README.md", card)
        shutil.copytree(source_root / "src" / "sgdetr_hf", build / "sgdetr_hf", ignore=_COPY_IGNORE)
    return out_dir


def _patterns(data_files: Any) -> list[tuple[str, str]]:
    """``(split, path pattern)`` of a ``configs`` entry's ``data_files`` (a pattern, a list of patterns, or
    a list of ``{split, path}`` where ``path`` is a pattern or a list)."""
    entries = data_files if isinstance(data_files, list) else [data_files]
    found = []
    for entry in entries:
        split, paths = (
            (entry.get("split", "train"), entry.get("path")) if isinstance(entry, dict) else ("train", entry)
        )
        found += [(split, path) for path in (paths if isinstance(paths, list) else [paths])]
    return found


def dataset_folder(folder: str | Path) -> Path:
    """``folder`` when it is a dataset repository ready to upload: a ``README.md`` whose ``configs``
    metadata lists data files that are all there (what ``scripts/build_benchmark_dataset.py`` writes).
    A card alone (``hub/datasets/<name>/`` holds only the cards) is refused: it would publish no data."""
    folder = Path(folder)
    card_path = folder / "README.md"
    build_hint = (
        "build the dataset folder first (scripts/build_benchmark_dataset.py --dataset NAME --split ... "
        "--features ... --output DIR) and pass --dataset-dir DIR"
    )
    if not card_path.is_file():
        raise ValueError(f"{folder} is not a dataset folder (no README.md): {build_hint}")
    configs = DatasetCard.load(card_path).data.to_dict().get("configs") or []
    if not configs:
        raise ValueError(
            f"{card_path} declares no data (no 'configs' in its metadata): it is a card alone; {build_hint}"
        )
    for config in configs:
        name = config.get("config_name", "default")
        for split, pattern in _patterns(config.get("data_files", [])):
            if not pattern or not any(path.is_file() for path in folder.glob(pattern)):
                raise ValueError(
                    f"{card_path}: config {name!r}, split {split!r} lists {pattern!r}, which matches no file in "
                    f"{folder}; {build_hint}"
                )
    return folder


def source_folder(kind: str, source_root: Path = SOURCE_ROOT) -> Path:
    """The folder that is uploaded as-is for the metric (``src/sgdetr_hf/metrics/sgdetr_eval/``, an
    ``evaluate`` module with its card and Gradio app)."""
    if kind != "metric":
        raise ValueError(f"source_folder is for 'metric', got {kind!r} (a dataset: dataset_folder)")
    folder = source_root / "src" / "sgdetr_hf" / "metrics" / "sgdetr_eval"
    if not (folder / "README.md").is_file():
        raise ValueError(f"{folder} has no README.md: the metric folder must hold its card")
    return folder


# ----------------------------------------------------------------------------------------- upload
def upload_plan(folder: str | Path, ignore_patterns: list[str] | None = None) -> list[tuple[str, int]]:
    """``(path in repo, size in bytes)`` of every file ``upload_folder`` would send, sorted.

    Same selection as ``HfApi.upload_folder``: every file under ``folder``, filtered by
    ``filter_repo_objects`` with our ignores plus huggingface_hub's ``DEFAULT_IGNORE_PATTERNS``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.glob("**/*")) if p.is_file()}
    ignores = list(IGNORE_PATTERNS if ignore_patterns is None else ignore_patterns) + DEFAULT_IGNORE_PATTERNS
    selected = filter_repo_objects(files, ignore_patterns=ignores)
    return [(path, files[path].stat().st_size) for path in selected]


def format_plan(plan: list[tuple[str, int]], repo_id: str, repo_type: str) -> str:
    """A table of the planned upload, for ``--dry-run``."""
    width = max([len(path) for path, _ in plan] + [4])
    lines = [f"{repo_type} repo {repo_id}: {len(plan)} files", f"{'path':<{width}}  {'bytes':>12}"]
    lines += [f"{path:<{width}}  {size:>12,}" for path, size in plan]
    lines.append(f"{'total':<{width}}  {sum(size for _, size in plan):>12,}")
    return "\n".join(lines)


def upload_repo(
    folder: str | Path,
    repo_id: str,
    kind: str,
    private: bool | None = None,
    space_model_id: str | None = None,
    commit_message: str | None = None,
    api: HfApi | None = None,
):
    """Create the Hub repository if needed and upload ``folder`` to it; returns the commit info.

    ``kind`` is one of :data:`REPO_KINDS`; metrics and demos become Gradio Spaces. For the demo Space,
    ``space_model_id`` is stored as its ``SGDETR_MODEL`` variable (the model the app serves).
    """
    if kind not in REPO_KINDS:
        raise ValueError(f"kind must be one of {REPO_KINDS}, got {kind!r}")
    api = api or HfApi()
    repo_type = HUB_REPO_TYPES[kind]
    api.create_repo(
        repo_id,
        repo_type=repo_type,
        private=private,
        exist_ok=True,
        space_sdk="gradio" if repo_type == "space" else None,
    )
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type=repo_type,
        ignore_patterns=IGNORE_PATTERNS,
        commit_message=commit_message or f"Upload the SG-DETR {kind}",
    )
    if kind == "space" and space_model_id:
        api.add_space_variable(repo_id, SPACE_MODEL_VARIABLE, space_model_id, description="model repo served")
    return commit
