"""Training throughput of SG-DETR on the QVHighlights shape: samples/s and peak memory.

One optimizer step = forward with labels (every loss term), backward, gradient clipping at 0.1 and an
AdamW step, through Accelerate exactly as ``scripts/train.py`` runs it (on CPU with its malloc setting, see
``sgdetr_hf.cpu_memory``; ``--system-malloc`` without). Inputs: L = 75 clips, N = 32
text tokens, d = 512 (InternVideo2-1B features), batch 32, default SG-DETR config; the targets are
toy moments (``sgdetr_hf.data.synthetic``) so that every loss branch runs.

    python scripts/benchmark_training.py                          # CPU, fp32
    python scripts/benchmark_training.py --mixed-precision bf16   # GPU bf16 (accelerate autocast)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sgdetr_hf.benchmarking import add_system_malloc_argument, malloc_setting, measure, peak_rss_mib
from sgdetr_hf.configuration_sgdetr import SGDetrConfig
from sgdetr_hf.data import MomentRetrievalCollator, ToyGroundingTask, ToyTaskConfig
from sgdetr_hf.modeling_sgdetr import SGDetrForMomentRetrieval
from sgdetr_hf.training.distributed import build_accelerator


def qvhighlights_batch(batch_size: int, num_clips: int, num_tokens: int, dim: int, seed: int) -> dict:
    """A collated batch: toy moments and saliency on ``num_clips`` clips, ``num_tokens`` text tokens of width ``dim``."""
    task = ToyGroundingTask(
        ToyTaskConfig(video_dim=dim, text_dim=dim, min_clips=num_clips, max_clips=num_clips), seed=seed
    )
    rows = task.samples(batch_size)
    rng = np.random.default_rng(seed)
    for row in rows:  # the toy queries are 3-8 words; the benchmark shape has N tokens
        row["text_features"] = rng.standard_normal((num_tokens, dim)).astype(np.float16)
    batch = MomentRetrievalCollator(max_clips=num_clips)(rows)
    batch.pop("meta")
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-clips", type=int, default=75)
    parser.add_argument("--num-tokens", type=int, default=32)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_system_malloc_argument(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    accelerator = build_accelerator(
        ".", args.mixed_precision, log_with=None
    )  # writes nothing without trackers
    malloc = malloc_setting(args.system_malloc, accelerator.device)
    torch.manual_seed(0)
    config = SGDetrConfig(video_feature_dim=args.dim, text_feature_dim=args.dim)
    model = SGDetrForMomentRetrieval(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1, fused=True)  # as the Trainer
    model, optimizer = accelerator.prepare(model, optimizer)
    batch = qvhighlights_batch(args.batch_size, args.num_clips, args.num_tokens, args.dim, seed=0)
    batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    batch["labels"] = [{k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in label.items()}
                       for label in batch["labels"]]  # fmt: skip

    def step() -> None:
        loss = model(**batch).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad()

    model.train()
    steps = measure(step, args.steps, args.warmup, accelerator.device)
    seconds, cpu_seconds = steps.total, sum(steps.cpu_seconds)

    cuda = accelerator.device.type == "cuda"
    device = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"device: {device}, {malloc}, mixed precision: {accelerator.mixed_precision}, parameters: {params:.2f} M"
    )
    print(f"shape: batch {args.batch_size}, L={args.num_clips}, N={args.num_tokens}, d={args.dim}")
    samples = args.steps * args.batch_size
    print(
        f"training: {samples / seconds:.2f} samples/s ({seconds / args.steps * 1e3:.0f} ms/step wall clock)"
    )
    if not cuda:  # on a shared machine the wall clock includes waiting for a core
        print(
            f"process CPU time: {cpu_seconds / args.steps * 1e3:.0f} ms/step ({samples / cpu_seconds:.2f} samples per CPU-second)"
        )
    if cuda:
        print(f"peak GPU memory (allocated): {steps.peak_memory_mib:.0f} MiB")
    print(f"peak host memory (max RSS): {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
