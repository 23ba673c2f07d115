"""Generate InterVid-MR (paper §4.3.2) from InternVid-10M-FLT captions and extracted features.

    # 1. filter the captions (writes OUT/captions.jsonl with a qid per caption, and OUT/caption_filter.json)
    python scripts/build_intervid_mr.py filter --input InternVid-10M-flt.jsonl --output OUT
    # 2. extract features for OUT/captions.jsonl: videos/<ytid>.safetensors (whole video, 2-s clips) and
    #    queries/<qid>.safetensors (sgdetr extract-features)
    # 3. windows, similarities, new positives and grades, in resumable shards; then the dataset folder
    python scripts/build_intervid_mr.py generate --output OUT --features FEATS --dataset-dir datasets/intervid-mr

``generate`` can be killed and re-run at any moment: finished shards made from the same settings,
captions, durations and feature files are kept, the others are redone. Bad input (a malformed record,
a missing file, NaN features or durations, no sample to build) is one ``error:`` line naming it, exit
code 2. Output:
OUT/shards/*.jsonl, OUT/{train,validation}.jsonl (QVHighlights format), OUT/summary.json and
OUT/window_lengths.png; with ``--dataset-dir``, the Parquet dataset (config ``intervid-mr``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

from huggingface_hub import DatasetCard

from sgdetr_hf.data.builder import FeatureFolder, build_dataset
from sgdetr_hf.data.intervid_mr import (
    InterVidMRConfig,
    WindowFeatures,
    check_durations,
    filter_captions,
    generate_intervid_mr,
)
from sgdetr_hf.data.readers import read_annotations
from sgdetr_hf.files import atomic_write_json, atomic_write_jsonl, strict_json

CARD = Path(__file__).resolve().parents[1] / "hub" / "datasets" / "intervid-mr" / "README.md"


def read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    """JSON Lines records and their ``file:line``; a malformed line raises ValueError naming file:line."""
    records, locations = [], []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: {error}") from None
                locations.append(f"{path}:{number}")
    return records, locations


def read_json(path: Path, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    filtering = commands.add_parser("filter", help="step 1: caption filtering")
    filtering.add_argument("--input", required=True, type=Path, help="InternVid-10M-FLT .jsonl")
    filtering.add_argument("--output", required=True, type=Path)
    generating = commands.add_parser("generate", help="steps 2-12: annotations, summary, optional dataset")
    generating.add_argument("--output", required=True, type=Path, help="the folder of the filter step")
    generating.add_argument("--features", required=True, help="feature folder (videos/<ytid>, queries/<qid>)")
    generating.add_argument("--durations", type=Path, help="JSON {ytid: seconds}; default: clips x 2 s")
    generating.add_argument("--shard-size", type=int, default=1000)
    generating.add_argument("--dataset-dir", type=Path, help="also build the Parquet dataset here")
    generating.add_argument(
        "--skip-missing", action="store_true", help="dataset build: leave out missing features"
    )
    for option in fields(InterVidMRConfig):
        generating.add_argument(
            f"--{option.name.replace('_', '-')}", type=type(option.default), default=option.default
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as error:  # bad input: one line naming what and where, exit code 2
        parser.error(str(error))


def run(args: argparse.Namespace) -> int:
    if args.command == "filter":
        if not args.input.is_file():
            raise FileNotFoundError(f"--input {args.input} not found (an InternVid-10M-FLT .jsonl)")
        records, locations = read_jsonl(args.input)
        captions, reasons = filter_captions(records, locations=locations)
        atomic_write_jsonl(args.output / "captions.jsonl", captions)
        atomic_write_json(args.output / "caption_filter.json", dict(reasons))
        print(strict_json({"kept": len(captions), "dropped": dict(reasons)}, indent=2))
        return 0

    config = InterVidMRConfig(
        **{option.name: getattr(args, option.name) for option in fields(InterVidMRConfig)}
    )
    features = FeatureFolder(args.features)
    filter_first = (
        f"run `build_intervid_mr.py filter --input <InternVid .jsonl> --output {args.output}` first"
    )
    captions_path = args.output / "captions.jsonl"
    if not captions_path.is_file():
        raise FileNotFoundError(f"{captions_path} not found: {filter_first}")
    captions, locations = read_jsonl(captions_path)
    caption_reasons = read_json(args.output / "caption_filter.json", filter_first)
    durations = None
    if args.durations:
        durations = read_json(args.durations, "--durations names a JSON file {ytid: seconds}")
        check_durations(durations, str(args.durations))
    summary = generate_intervid_mr(
        captions,
        features,
        args.output,
        config=config,
        durations=durations,
        shard_size=args.shard_size,
        caption_reasons=caption_reasons,
        locations=locations,
    )
    print(strict_json({k: v for k, v in summary.items() if k != "config"}, indent=2))
    if args.dataset_dir and not summary["samples"]:
        reasons = summary["sample_filter_reasons"]
        detail = f"the {summary['captions_after_filter']} captions were all dropped ({reasons})"
        if reasons.get("missing_features"):
            detail += (
                f"; {reasons['missing_features']} lack features in {args.features} (videos/<ytid>.safetensors, "
                f"queries/<qid>.safetensors), e.g. {', '.join(summary['missing_features_examples'])}: extract them"
            )
        raise ValueError(f"no InterVid-MR sample to build into {args.dataset_dir}: {detail}")
    if args.dataset_dir:
        splits = {
            split: read_annotations(args.output / f"{split}.jsonl", "intervid-mr")
            for split in ("train", "validation")
            if summary["splits"][split]
        }
        card = DatasetCard.load(CARD) if CARD.is_file() else None
        metadata = (
            {k: v for k, v in card.data.to_dict().items() if k not in ("configs", "dataset_info")}
            if card
            else {}
        )
        report = build_dataset(
            args.dataset_dir,
            "intervid-mr",
            splits,
            WindowFeatures(features, config.clip_length),
            skip_missing=args.skip_missing,
            card_body=card.text if card else None,
            card_metadata=metadata,
        )
        print(strict_json({k: v for k, v in vars(report).items() if k != "files"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
