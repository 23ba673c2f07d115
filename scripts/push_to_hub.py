"""Build a Hub repository of the SG-DETR release as a local folder, then upload it (or, with --dry-run,
print every file and size that would go up).

    python scripts/push_to_hub.py --what model   --repo-id ORG/sg-detr-qvhighlights --model runs/qvh/best
    python scripts/push_to_hub.py --what space   --repo-id ORG/sg-detr-demo --model-repo-id ORG/sg-detr-qvhighlights
    python scripts/push_to_hub.py --what dataset --repo-id ORG/qvhighlights --dataset-dir datasets/qvhighlights
    python scripts/push_to_hub.py --what metric  --repo-id ORG/sgdetr_eval --dry-run
    python scripts/push_to_hub.py --write-card-template      # refresh hub/model/README.md from model_card.md

The model and Space are built in ``--out`` (default ``build/hub/<what>`` under the current directory, never
inside the source checkout unless you run from it). A dataset is the folder that
``scripts/build_benchmark_dataset.py --output DIR`` wrote (Parquet shards + card, both configs of a dataset
such as ``qvhighlights`` and ``qvhighlights-features`` in one folder); a folder without its data is refused.
The model card's ``model-index`` holds only numbers measured for the weights published: the run's
``eval_results.json`` in ``--model``, or ``--results``; the paper's numbers are in its prose.

Uploading needs a token (``hf auth login`` or ``HF_TOKEN``). The logic lives in ``scripts/publishing.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id

import publishing  # scripts/publishing.py, beside this script
from sgdetr_hf.files import atomic_write_text

logger = logging.getLogger("push_to_hub")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=publishing.REPO_KINDS, help="which repository to publish")
    parser.add_argument("--repo-id", help="Hub repository id, ORG/NAME")
    parser.add_argument(
        "--dry-run", action="store_true", help="build, list the files and sizes, upload nothing"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="build folder of a model or Space (default: ./build/hub/<what>, in the current directory)",
    )
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    model = parser.add_argument_group("model")
    model.add_argument("--model", type=Path, help="saved SG-DETR model folder to publish")
    model.add_argument("--encoder", type=Path, help="converted InternVideo2 folder (default: MODEL/encoder)")
    model.add_argument(
        "--space-id", default=publishing.DEFAULT_SPACE_REPO, help="the demo Space linked from the card"
    )
    model.add_argument(
        "--paper-setting",
        default="qvhighlights",
        choices=sorted(publishing.PAPER_RESULTS),
        help="the paper's training setting this checkpoint reproduces (its numbers go in the card)",
    )
    model.add_argument(
        "--results",
        type=Path,
        help="JSON file of an evaluation of these weights (default: the run's MODEL/eval_results.json, if any)",
    )
    space = parser.add_argument_group("space")
    space.add_argument(
        "--model-repo-id", default=publishing.DEFAULT_MODEL_REPO, help="model the Space serves"
    )
    dataset = parser.add_argument_group("dataset")
    dataset.add_argument(
        "--dataset-dir",
        type=Path,
        help="dataset folder written by scripts/build_benchmark_dataset.py --output (Parquet + card)",
    )
    parser.add_argument(
        "--write-card-template",
        action="store_true",
        help="render model_card.md with the defaults into hub/model/README.md and exit",
    )
    return parser


def build_folder(args: argparse.Namespace) -> Path:
    """The local folder that holds the complete repository for ``args.what``."""
    out = args.out or Path.cwd() / "build" / "hub" / args.what
    if args.what == "model":
        if args.model is None:
            raise ValueError("--what model needs --model DIR (a saved SG-DETR model folder)")
        measured = publishing.load_measured_results(args.results) if args.results else None
        return publishing.build_model_repo(
            args.model, out, args.repo_id, args.space_id, args.paper_setting, measured, args.encoder
        )
    if args.what == "space":
        return publishing.build_space_repo(out, args.model_repo_id)
    if args.what == "dataset":
        if args.dataset_dir is None:
            raise ValueError(
                "--what dataset needs --dataset-dir DIR (a folder written by scripts/build_benchmark_dataset.py)"
            )
        return publishing.dataset_folder(args.dataset_dir)
    return publishing.source_folder(args.what)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.write_card_template:
        path = publishing.SOURCE_ROOT / "hub" / "model" / "README.md"
        atomic_write_text(path, str(publishing.render_model_card()))
        logger.info("wrote %s", path)
        return 0
    if not args.what or not args.repo_id:
        parser.error("--what and --repo-id are required")
    # checked before the build: a dry run must not pass an id that the upload, or the Hub's card metadata, refuses
    for option in ("repo_id", "model_repo_id", "space_id"):
        try:
            validate_repo_id(getattr(args, option))
        except HFValidationError as error:
            parser.error(f"--{option.replace('_', '-')}: {error}")
    try:
        folder = build_folder(args)
        plan = publishing.upload_plan(folder)
        print(publishing.format_plan(plan, args.repo_id, publishing.HUB_REPO_TYPES[args.what]))
        if args.dry_run:
            logger.info("dry run: nothing uploaded (folder: %s)", folder)
            return 0
        commit = publishing.upload_repo(
            folder,
            args.repo_id,
            args.what,
            private=args.private or None,
            space_model_id=args.model_repo_id if args.what == "space" else None,
        )
    except (ValueError, FileExistsError) as error:  # bad inputs, or an output folder that is not a build
        parser.error(str(error))
    logger.info("uploaded %s: %s", args.repo_id, getattr(commit, "commit_url", commit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
