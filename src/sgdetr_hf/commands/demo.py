"""``sgdetr demo``: build SG-DETR from the default config and predict on a seeded feature sequence.

The weights are randomly initialised (seeded) and the features are synthetic, so the windows and scores show
the output format and the end-to-end path (features -> model -> post-processing), not a trained result.
"""

from __future__ import annotations

import argparse

from ..files import strict_json
from . import CommandLineError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for the weights and the features (default: 0)"
    )
    parser.add_argument("--num-clips", type=int, default=75, help="clips in the video (default: 75 = 150 s)")
    parser.add_argument("--num-tokens", type=int, default=12, help="query tokens (default: 12)")
    parser.add_argument("--top-k", type=int, default=5, help="windows to print (default: 5)")
    parser.add_argument("--json", action="store_true", help="print the prediction as one JSON line")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..configuration_sgdetr import SGDetrConfig
    from ..modeling_sgdetr import SGDetrForMomentRetrieval
    from ..postprocessing_sgdetr import post_process_moment_retrieval

    for option, value in (
        ("--num-clips", args.num_clips),
        ("--num-tokens", args.num_tokens),
        ("--top-k", args.top_k),
    ):
        if value < 1:
            raise CommandLineError(f"{option} must be >= 1, got {value}")
    torch.manual_seed(args.seed)
    config = SGDetrConfig()
    model = SGDetrForMomentRetrieval(config).eval()
    generator = torch.Generator().manual_seed(args.seed)
    video = torch.randn(1, args.num_clips, config.video_feature_dim, generator=generator)
    text = torch.randn(1, args.num_tokens, config.text_feature_dim, generator=generator)
    duration = args.num_clips * config.clip_length
    with torch.no_grad():
        outputs = model(video, torch.ones(1, args.num_clips), text, torch.ones(1, args.num_tokens))
    prediction = post_process_moment_retrieval(outputs, [duration], top_k=args.top_k, config=config)[0]
    if args.json:
        print(strict_json(prediction))
        return 0
    params = sum(p.numel() for p in model.parameters())
    print(f"SG-DETR (default config, {params / 1e6:.2f} M parameters, random seeded weights: not trained)")
    print(
        f"input: {args.num_clips} clips x {config.video_feature_dim} (video, {duration:g} s), "
        f"{args.num_tokens} tokens x {config.text_feature_dim} (query); synthetic features, seed {args.seed}"
    )
    print(f"top {args.top_k} windows [start_s, end_s, score] (weighted span fusion of DETR and ATSS):")
    for start, end, score in prediction["pred_relevant_windows"]:
        print(f"  [{start:7.2f}, {end:7.2f}]  {score:.4f}")
    saliency = prediction["pred_saliency_scores"]
    print(f"saliency (one raw score per clip, {len(saliency)} clips):")
    print("  " + " ".join(f"{s:.2f}" for s in saliency))
    return 0
