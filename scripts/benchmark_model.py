"""Speed and memory of SG-DETR (default config, InternVideo2-1B feature dims 512/512).

Measures, for each shape (QVHighlights: L=75 clips, N=32 tokens; a one-hour video: L=1800):

- inference queries/s at batch 1 and 32 (model forward, and forward + post-processing), peak memory;
- training samples/s at batch 32 on the QVHighlights shape with every query group on (denoising,
  ATSS-positive queries, negative pairs, moment encoder): forward + loss + backward + AdamW step.

CPU in fp32 by default; on a GPU the model runs in bf16 (``--dtype bfloat16``) and peak memory is
``torch.cuda.max_memory_allocated``. On CPU each measurement runs in its own process and reports that process's
peak resident memory (model + activations + the Python runtime). Warm-up runs are excluded.

    python scripts/benchmark_model.py                       # CPU, fp32, default table
    python scripts/benchmark_model.py --device cuda         # GPU, bf16
    python scripts/benchmark_model.py --quick               # fewer repeats (smoke run)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from sgdetr_hf import SGDetrConfig, SGDetrForMomentRetrieval, post_process_moment_retrieval
from sgdetr_hf.benchmarking import measure, print_table, random_inputs, random_labels, write_json
from sgdetr_hf.files import strict_json


def benchmark_row(
    mode: str, batch: int, clips: int, tokens: int, device: str, dtype: str, warmup: int, repeats: int
) -> dict:
    """One row of the table: a fresh default model, timed in ``mode`` (``"inference"`` or ``"training"``)."""
    torch.manual_seed(0)
    config = SGDetrConfig()
    model = SGDetrForMomentRetrieval(config).to(device=device, dtype=getattr(torch, dtype))
    inputs = random_inputs(batch, clips, tokens, config.video_feature_dim, device)
    result = {
        "mode": mode,
        "batch": batch,
        "clips": clips,
        "tokens": tokens,
        "device": device,
        "dtype": dtype,
    }
    if mode == "inference":
        model.eval()
        durations = [clips * config.clip_length] * batch
        with torch.no_grad():
            forward = measure(lambda: model(*inputs), repeats, warmup, device)
            post_process = measure(
                lambda: post_process_moment_retrieval(forward.result, durations, config=config),
                repeats,
                warmup,
                device,
            )
        result.update(
            forward_ms=1000 * forward.median,
            queries_per_s=batch / forward.median,
            queries_per_s_with_postprocess=batch / (forward.median + post_process.median),
            peak_memory_mb=max(forward.peak_memory_mib, post_process.peak_memory_mib),
        )
    else:
        model.train()
        labels = random_labels(batch, clips, device)
        # fused, as the Trainer
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)

        def step() -> None:
            model(*inputs, labels=labels).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steps = measure(step, repeats, warmup, device)
        result.update(
            step_ms=1000 * steps.median,
            samples_per_s=batch / steps.median,
            peak_memory_mb=steps.peak_memory_mib,
        )
    return result


def table_row(row: dict) -> dict[str, str]:
    """The printed form of a :func:`benchmark_row` result."""
    if row["mode"] == "inference":
        speed = f"{row['queries_per_s']:.1f} queries/s ({row['queries_per_s_with_postprocess']:.1f} with post-processing)"
        ms = row["forward_ms"]
    else:
        speed = f"{row['samples_per_s']:.1f} samples/s"
        ms = row["step_ms"]
    return {
        "mode": row["mode"],
        "batch": row["batch"],
        "clips L": row["clips"],
        "tokens N": row["tokens"],
        "time per batch": f"{ms:.1f} ms",
        "throughput": speed,
        "peak memory": f"{row['peak_memory_mb']:.0f} MiB",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (GPU default)")
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed runs per row")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one measurement as JSON
    args = parser.parse_args()
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup, repeats = (1, 2) if args.quick else (2, 5)

    if args.one:
        spec = json.loads(args.one)
        print(strict_json(benchmark_row(**spec, device=args.device, dtype=dtype)))
        return 0

    plan = [
        ("inference", 1, 75, 32, warmup, repeats),
        ("inference", 32, 75, 32, warmup, repeats),
        ("inference", 1, 1800, 32, warmup, repeats),
        ("inference", 32, 1800, 32, 1, max(1, repeats // 2)),
        ("training", 32, 75, 32, 1, max(2, repeats // 2)),
    ]
    rows = []
    for mode, batch, clips, tokens, w, r in plan:
        spec = dict(mode=mode, batch=batch, clips=clips, tokens=tokens, warmup=w, repeats=r)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
            row = benchmark_row(**spec, device=args.device, dtype=dtype)
        else:  # a fresh process per row so that the peak RSS belongs to that row
            cmd = [
                sys.executable,
                __file__,
                "--device",
                args.device,
                "--dtype",
                dtype,
                "--one",
                strict_json(spec),
            ]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            row = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
            )
        rows.append(row)
        print(strict_json(row), file=sys.stderr)

    name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"\nSG-DETR default config (11.7 M parameters), {name}, {dtype}, torch {torch.__version__}\n")
    print_table([table_row(row) for row in rows])
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
