"""Build a benchmark dataset folder (Parquet + card) from annotation files and extracted features.

    python scripts/build_benchmark_dataset.py --dataset qvhighlights \\
        --split train=../shared/data/qvhighlights/highlight_train_release.jsonl \\
        --split validation=../shared/data/qvhighlights/highlight_val_release.jsonl \\
        --features features/qvhighlights --output datasets/qvhighlights

``--features`` is a folder written by ``sgdetr extract-features`` (``videos/<vid>.safetensors``,
``queries/<qid>.safetensors``). The card's prose and metadata come from ``hub/datasets/<dataset>/README.md``
(or ``--card``); its ``configs`` and ``dataset_info`` are generated from what was built.

Published ``.npz`` releases (Moment-DETR, QD-DETR, CG-DETR, UniVTG, lighthouse) are read as they are, with
the reference loaders' conventions (:mod:`sgdetr_hf.data.npz_features`)::

    python scripts/build_benchmark_dataset.py --dataset qvhighlights --features-format moment_detr \
        --features moment_detr_features --video-features clip_features,slowfast_features \
        --text-features clip_text_features --split train=... --split validation=... \
        --output datasets/qvhighlights-clip-slowfast

then ``accelerate launch scripts/train.py --recipe qvhighlights_clip_slowfast --dataset_path
datasets/qvhighlights-clip-slowfast``. Rerunning an interrupted build keeps its finished shards.
Then ``datasets.load_dataset("datasets/qvhighlights", "qvhighlights")`` works offline, and
``hf upload ORG/NAME datasets/qvhighlights --repo-type dataset`` publishes the same folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from huggingface_hub import DatasetCard

from sgdetr_hf.data.builder import FeatureFolder, build_dataset
from sgdetr_hf.data.npz_features import POOLED_TOKEN_CHOICES, PUBLISHED_LAYOUTS, NpzFeatures
from sgdetr_hf.data.readers import read_annotations
from sgdetr_hf.data.schema import CLIP_LENGTHS, MAX_CLIP_MISMATCH
from sgdetr_hf.files import strict_json

HUB_CARDS = Path(__file__).resolve().parents[1] / "hub" / "datasets"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", required=True, choices=sorted(CLIP_LENGTHS), help="annotation format and config name"
    )
    parser.add_argument(
        "--split",
        action="append",
        required=True,
        metavar="NAME=FILE",
        help="a split and its .jsonl (repeat for each split; one file per split)",
    )
    parser.add_argument(
        "--features", required=True, help="feature folder (safetensors: videos/ and queries/ inside)"
    )
    parser.add_argument(
        "--features-format",
        choices=["safetensors", "moment_detr"],
        default="safetensors",
        help="safetensors: sgdetr extract-features; moment_detr: the per-file .npz releases of Moment-DETR, "
        "QD-DETR, CG-DETR, UniVTG and lighthouse",
    )
    npz = parser.add_argument_group("--features-format moment_detr (defaults: the reference loaders')")
    npz.add_argument(
        "--video-features",
        help="comma-separated sub-folders concatenated in this order, e.g. clip_features,slowfast_features",
    )
    npz.add_argument("--text-features", help="the query sub-folder, e.g. clip_text_features")
    npz.add_argument("--video-key", help="array key of the video files (default: features)")
    npz.add_argument("--text-key", help="array key of the query tokens (default: last_hidden_state)")
    npz.add_argument("--pooled-key", help="array key of the pooled query vector (default: pooler_output)")
    npz.add_argument("--query-file", help="query file name pattern (default: qid{qid}.npz; TACoS: {qid}.npz)")
    npz.add_argument(
        "--normalize-video",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalise each video feature type per clip (default: on)",
    )
    npz.add_argument(
        "--normalize-text",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalise each query token (default: on; off for TVSum and YouTube Highlights)",
    )
    npz.add_argument(
        "--tef",
        action="store_true",
        help="append the 2 temporal-endpoint columns (d_v + 2); SG-DETR adds them itself (model.use_tef)",
    )
    npz.add_argument(
        "--pooled-token",
        choices=POOLED_TOKEN_CHOICES,
        default="drop",
        help="the pooled query vector: left out (default), prepended as a first token, or the only token",
    )
    parser.add_argument(
        "--name", default=None, help="dataset config name (default: --dataset); the recipe's dataset_config"
    )
    parser.add_argument(
        "--output", required=True, help="dataset folder to write (other datasets in it are kept)"
    )
    parser.add_argument(
        "--skip-missing", action="store_true", help="leave out queries without features, and list them"
    )
    parser.add_argument(
        "--clip-length", type=float, default=None, help="seconds per feature row (default: the dataset's)"
    )
    parser.add_argument(
        "--card", default=None, help="card to take prose and metadata from (default: hub/datasets/<dataset>)"
    )
    parser.add_argument(
        "--max-clip-mismatch",
        type=int,
        default=MAX_CLIP_MISMATCH,
        help="clips a video's feature length may differ from ceil(duration / clip length), and the .npz "
        f"feature types from each other (default: {MAX_CLIP_MISMATCH})",
    )
    parser.add_argument("--max-shard-mib", type=int, default=512, help="largest Parquet shard (default: 512)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return build(args, parser)
    except (ValueError, OSError) as error:  # bad input: one line naming what and where, exit code 2
        parser.error(str(error))


def feature_source(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The FeatureSource that --features-format and its options describe."""
    npz_options = ("video_features", "text_features", "video_key", "text_key", "pooled_key", "query_file")
    if args.features_format == "safetensors":
        given = [f"--{o.replace('_', '-')}" for o in npz_options if getattr(args, o) is not None]
        given += ["--tef"] * args.tef + ["--pooled-token"] * (args.pooled_token != "drop")
        given += [
            f"--{o}"
            for o in ("normalize-video", "normalize-text")
            if getattr(args, o.replace("-", "_")) is not None
        ]
        if given:
            parser.error(f"{', '.join(given)} apply to --features-format moment_detr only")
        return FeatureFolder(args.features)
    if not args.video_features or not args.text_features:
        parser.error("--features-format moment_detr needs --video-features and --text-features")
    layout = PUBLISHED_LAYOUTS[args.dataset]
    overrides = {
        key: value
        for key, value in {
            "video_key": args.video_key,
            "text_key": args.text_key,
            "pooled_key": args.pooled_key,
            "query_file": args.query_file,
            "normalize_video": args.normalize_video,
            "normalize_text": args.normalize_text,
        }.items()
        if value is not None
    }
    return NpzFeatures(
        args.features,
        [folder.strip() for folder in args.video_features.split(",") if folder.strip()],
        args.text_features,
        dataclasses.replace(layout, **overrides),
        tef=args.tef,
        pooled_token=args.pooled_token,
        max_clip_mismatch=args.max_clip_mismatch,
    )


def build(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.max_clip_mismatch < 0:
        parser.error(f"--max-clip-mismatch must be >= 0 clips, got {args.max_clip_mismatch}")
    if args.max_shard_mib <= 0:
        parser.error(f"--max-shard-mib must be > 0, got {args.max_shard_mib}")
    if args.card and not Path(args.card).is_file():  # else the built card would have no licence nor prose
        parser.error(
            f"--card {args.card} is not a file: give a dataset card (README.md) to take its licence from"
        )
    features = feature_source(args, parser)
    files: dict[str, str] = {}
    for item in args.split:  # every name checked before any file is read
        name, _, path = item.partition("=")
        if not path:
            parser.error(f"--split expects NAME=FILE, got {item!r}")
        if name in files:
            parser.error(
                f"--split {name}= is given twice ({files[name]} and {path}); one file per split: join the "
                "files into one .jsonl, or give the second split another name"
            )
        files[name] = path
    splits = {name: read_annotations(path, args.dataset, args.clip_length) for name, path in files.items()}
    card_path = Path(args.card) if args.card else HUB_CARDS / args.dataset / "README.md"
    card_body, metadata = None, {}
    if card_path.is_file():
        card = DatasetCard.load(card_path)
        card_body = card.text
        metadata = {k: v for k, v in card.data.to_dict().items() if k not in ("configs", "dataset_info")}
    if isinstance(features, NpzFeatures) and not args.card:
        # The packaged cards describe the InternVideo2 features; say what these are instead.
        kinds = " + ".join(features.video_types)
        metadata["pretty_name"] = f"{args.dataset} with {kinds} features"
        card_body = (
            f"\n# {args.dataset}: {kinds} video features, {features.text_type} query features\n\n"
            f"Built by `scripts/build_benchmark_dataset.py --features-format moment_detr` from a published "
            f"feature release, with the reference loaders' conventions: "
            f"`{strict_json({k: v for k, v in features.options().items() if k != 'root'})}`. The "
            "annotations' licence is in the card metadata.\n"
        )
    report = build_dataset(
        args.output,
        args.name or args.dataset,
        splits,
        features,
        skip_missing=args.skip_missing,
        max_shard_bytes=args.max_shard_mib * 2**20,
        card_body=card_body,
        card_metadata=metadata,
        max_clip_mismatch=args.max_clip_mismatch,
    )
    summary = {k: v for k, v in vars(report).items() if k not in ("files", "reused_files")}
    summary["reused_shards"] = len(report.reused_files)
    print(strict_json(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
