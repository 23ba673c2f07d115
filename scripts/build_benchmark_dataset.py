"""Build a benchmark dataset folder (Parquet + card) from annotation files and extracted features.

    python scripts/build_benchmark_dataset.py --dataset qvhighlights \\
        --split train=../shared/data/qvhighlights/highlight_train_release.jsonl \\
        --split validation=../shared/data/qvhighlights/highlight_val_release.jsonl \\
        --features features/qvhighlights --output datasets/qvhighlights

``--features`` is a folder written by ``sgdetr extract-features`` (``videos/<vid>.safetensors``,
``queries/<qid>.safetensors``). The card's prose and metadata come from ``hub/datasets/<dataset>/README.md``
(or ``--card``); its ``configs`` and ``dataset_info`` are generated from what was built.
Then ``datasets.load_dataset("datasets/qvhighlights", "qvhighlights")`` works offline, and
``hf upload ORG/NAME datasets/qvhighlights --repo-type dataset`` publishes the same folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from huggingface_hub import DatasetCard

from sgdetr_hf.data.builder import FeatureFolder, build_dataset
from sgdetr_hf.data.readers import read_annotations
from sgdetr_hf.data.schema import CLIP_LENGTHS
from sgdetr_hf.files import strict_json

HUB_CARDS = Path(__file__).resolve().parents[1] / "hub" / "datasets"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", required=True, choices=sorted(CLIP_LENGTHS), help="annotation format and config name"
    )
    parser.add_argument(
        "--split", action="append", required=True, metavar="NAME=FILE", help="a split and its .jsonl"
    )
    parser.add_argument("--features", required=True, help="feature folder (videos/ and queries/ inside)")
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
    parser.add_argument("--max-shard-mib", type=int, default=512)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    splits = {}
    for item in args.split:
        name, _, path = item.partition("=")
        if not path:
            parser.error(f"--split expects NAME=FILE, got {item!r}")
        splits[name] = read_annotations(path, args.dataset, args.clip_length)
    card_path = Path(args.card) if args.card else HUB_CARDS / args.dataset / "README.md"
    card_body, metadata = None, {}
    if card_path.is_file():
        card = DatasetCard.load(card_path)
        card_body = card.text
        metadata = {k: v for k, v in card.data.to_dict().items() if k not in ("configs", "dataset_info")}
    report = build_dataset(
        args.output,
        args.dataset,
        splits,
        FeatureFolder(args.features),
        skip_missing=args.skip_missing,
        max_shard_bytes=args.max_shard_mib * 2**20,
        card_body=card_body,
        card_metadata=metadata,
    )
    print(strict_json({k: v for k, v in vars(report).items() if k != "files"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
