"""Throughput of the "video-moment-retrieval" pipeline on pre-extracted features, short and long videos.

    python scripts/benchmark_pipeline.py [--device cuda] [--minutes 2.5 20 60] [--queries 1 10]

SG-DETR runs with the default (paper) configuration and random weights (speed does not depend on the
weights). Features stand in for InternVideo2's (512-d, one row per 2-s clip), so the video decoding and
encoding are not timed: this measures the model, the windowing of long videos and the fusion. Prints, per
(video length, queries): windows per video, the median time of 3 calls, video-minutes processed per second
and the peak memory (CPU: ru_maxrss of the process; CUDA: max_memory_allocated).
"""

from __future__ import annotations

import argparse
import functools

import torch

from sgdetr_hf import SGDetrConfig, SGDetrForMomentRetrieval, VideoMomentRetrievalPipeline
from sgdetr_hf.benchmarking import measure, print_table
from sgdetr_hf.long_video_sgdetr import sliding_windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.5, 20.0, 60.0])
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window-batch-size", type=int, default=64)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = SGDetrConfig()
    model = SGDetrForMomentRetrieval(config).eval()
    retriever = VideoMomentRetrievalPipeline(model=model, encoder=False, device=args.device)
    generator = torch.Generator().manual_seed(0)
    warm_up = torch.randn(config.max_num_clips, config.video_feature_dim, generator=generator)
    retriever({"video_features": warm_up}, text_features=[torch.randn(12, config.text_feature_dim)])
    print(f"device {args.device}, threads {torch.get_num_threads()}, SG-DETR default config (random weights)")
    rows = []
    for minutes in args.minutes:
        num_clips = round(minutes * 60 / config.clip_length)
        windows = len(sliding_windows(num_clips, config.max_num_clips, config.max_num_clips // 3))
        video = torch.randn(num_clips, config.video_feature_dim, generator=generator)
        for num_queries in args.queries:
            text = [torch.randn(12, config.text_feature_dim, generator=generator) for _ in range(num_queries)]
            call = functools.partial(
                retriever,
                {"video_features": video},
                text_features=text,
                window_batch_size=args.window_batch_size,
            )
            calls = measure(call, args.repeats, device=args.device)
            rows.append(
                {
                    "video": f"{minutes:g}m",
                    "queries": num_queries,
                    "windows": windows,
                    "median s": f"{calls.median:.3f}",
                    "video-min/s": f"{minutes / calls.median:.1f}",
                    "peak MB": f"{calls.peak_memory_mib:.0f}",
                }
            )
    print_table(rows)


if __name__ == "__main__":
    main()
