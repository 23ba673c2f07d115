"""SG-DETR's speed relative to a stock-PyTorch DETR-family reference, measured in one interleaved run.

The reference is what people build from stock PyTorch for the same task: linear input projections, an
``nn.TransformerEncoder`` over the L + N video and text tokens and an ``nn.TransformerDecoder`` with 25 learned
queries (d = 256, 8 heads, FFN 1024, 3 + 3 layers, the nested-tensor fast path off), linear span / class /
saliency heads; its training objective is L1 + cross-entropy + saliency BCE on a fixed query assignment
(no matcher). Both models see the same inputs (the QVHighlights shape by default: L = 75 clips, N = 32 tokens,
d = 512 features).

Cases: inference forward at batch 1 and ``--batch-size``; SG-DETR's post-processing (its share of the
forward); one training step at ``--batch-size`` (forward + loss with every query group on + backward + AdamW);
the loss with the matcher alone (its share of the step). For each: FLOPs (``torch.utils.flop_counter``), ATen
operator count (both of the eager forward), best-of-rounds seconds, throughput and achieved GFLOP/s, and the **ratios SG-DETR / reference**
of throughput and of achieved GFLOP/s. The two models are timed in alternation (one call each per round), so
machine noise hits both alike: compare the ratios, not the times. Peak memory of each model and case is measured
in a fresh process that runs only it (``--no-memory`` skips it): on CPU its peak RSS, on CUDA
``torch.cuda.max_memory_allocated`` (weights, optimizer state and activations; not the CUDA context).
``--profile`` adds, from ``torch.profiler`` on each eager case after its timed rounds, the share of each
model's time in matrix kernels (matrix products and attention), SG-DETR's top kernels, and the throughput
ratio SG-DETR would reach if every other kernel of its took no time (the reference as profiled against
SG-DETR's matrix kernels alone): the most that work on element-wise ops, copies and launches could give.

    python scripts/benchmark_speed.py --threads 2 --json docs/speed/cpu.json       # idle CPU, fp32
    python scripts/benchmark_speed.py --device cuda --dtype bfloat16              # GPU
    python scripts/benchmark_speed.py --compile                                   # torch.compile both models
    python scripts/benchmark_speed.py --compile --freeze --cases inference        # + Inductor freezing
    python scripts/benchmark_speed.py --profile --no-memory                       # where the time goes
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sgdetr_hf import SGDetrConfig, SGDetrForMomentRetrieval, post_process_moment_retrieval
from sgdetr_hf.benchmarking import (
    WINDOW_COUNT_CHOICES,
    add_system_malloc_argument,
    count_ops_and_flops,
    kernel_time_split,
    largest_deviation,
    malloc_setting,
    measure,
    measure_interleaved,
    print_table,
    random_inputs,
    random_labels,
    write_json,
)
from sgdetr_hf.files import strict_json
from sgdetr_hf.targets_sgdetr import prepare_targets

logger = logging.getLogger("benchmark_speed")
#: how far (relative to each output tensor's largest value) a compiled model's inference outputs may be off the
#: eager model's before its timings are flagged: float32 reorders sums (~1e-6 seen), bfloat16 rounds each op
COMPILED_TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}
CASES = ("inference", "postprocess", "training", "loss")


class StockDetrReference(nn.Module):
    """The stock-PyTorch encoder-decoder described in the module docstring."""

    def __init__(self, video_dim: int, text_dim: int, num_queries: int = 25, d: int = 256, layers: int = 3):
        super().__init__()
        self.video_projection = nn.Linear(video_dim, d)
        self.text_projection = nn.Linear(text_dim, d)
        encoder_layer = nn.TransformerEncoderLayer(d, 8, 4 * d, batch_first=True)
        self.encoder = nn.TransformerEncoder(encoder_layer, layers, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, 8, 4 * d, batch_first=True), layers
        )
        self.queries = nn.Embedding(num_queries, d)
        self.span_head = nn.Linear(d, 2)
        self.class_head = nn.Linear(d, 2)
        self.saliency_head = nn.Linear(d, 1)

    def forward(self, video, video_mask, text, text_mask) -> dict[str, torch.Tensor]:
        tokens = torch.cat((self.video_projection(video), self.text_projection(text)), 1)
        padding = torch.cat((video_mask, text_mask), 1) == 0
        memory = self.encoder(tokens, src_key_padding_mask=padding)
        queries = self.queries.weight[None].expand(video.shape[0], -1, -1)
        hidden = self.decoder(queries, memory, memory_key_padding_mask=padding)
        return {
            "spans": self.span_head(hidden).sigmoid(),
            "logits": self.class_head(hidden),
            "saliency": self.saliency_head(memory[:, : video.shape[1]])[..., 0],
        }

    @staticmethod
    def loss(outputs: dict[str, torch.Tensor], labels: list[dict]) -> torch.Tensor:
        """Every query regresses its sample's first window; all queries are class 0; saliency > 0 is relevant."""
        target = torch.stack([label["spans"][0] for label in labels])[:, None].expand_as(outputs["spans"])
        classes = torch.zeros(outputs["logits"].shape[:2], dtype=torch.long, device=target.device)
        saliency = torch.stack([label["saliency_scores"] for label in labels])
        return (
            F.l1_loss(outputs["spans"], target)
            + F.cross_entropy(outputs["logits"].flatten(0, 1), classes.flatten())
            + F.binary_cross_entropy_with_logits(outputs["saliency"], (saliency > 0).float())
        )


def build_models(
    dim: int, device: str, names: tuple[str, ...] = ("sgdetr", "reference")
) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    config = SGDetrConfig(video_feature_dim=dim, text_feature_dim=dim)
    builders = {
        "sgdetr": lambda: SGDetrForMomentRetrieval(config),
        "reference": lambda: StockDetrReference(dim, dim, config.num_queries),
    }
    return {name: builders[name]().to(device) for name in names}


def case_functions(
    case: str, models: dict[str, nn.Module], batch: int, args: argparse.Namespace
) -> dict[str, Callable[[], Any]]:
    """The callables a case times: one per model (``sgdetr`` / ``reference``), or SG-DETR's part alone."""
    inputs = random_inputs(batch, args.clips, args.tokens, args.dim, args.device)
    autocast = (
        torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
        if args.dtype == "bfloat16"
        else nullcontext()
    )
    sgdetr = models.get("sgdetr")
    forwards = {
        name: (torch.compile(model, mode=args.compile_mode) if args.compile else model)
        for name, model in models.items()
    }

    if case in ("inference", "postprocess"):
        for model in models.values():
            model.eval()

        def infer(name: str, grad: bool = False) -> Callable[[], Any]:
            def run():
                with torch.set_grad_enabled(grad), autocast:
                    return forwards[name](*inputs)

            return run

        functions = {name: infer(name) for name in models}
        # FLOPs are counted on a forward with autograd on: without it the reference takes PyTorch's fused
        # encoder-layer kernel, whose arithmetic torch.utils.flop_counter does not see (it is the same)
        functions.update({f"{name}:flops": infer(name, grad=True) for name in models})
        if case == "postprocess":
            outputs = functions["sgdetr"]()
            durations = [args.clips * sgdetr.config.clip_length] * batch
            config = sgdetr.config
            functions["postprocess"] = lambda: post_process_moment_retrieval(
                outputs, durations, config=config
            )
        return functions

    labels = random_labels(
        batch, args.clips, args.device, windows=args.windows, max_windows=SGDetrConfig.max_gt_windows
    )
    for model in models.values():
        model.train()
    optimizers = {
        name: torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)  # as the Trainer
        for name, model in models.items()
    }

    def step(name: str) -> Callable[[], None]:
        def run():
            with autocast:
                if name == "sgdetr":
                    loss = forwards[name](*inputs, labels=labels).loss
                else:
                    loss = StockDetrReference.loss(forwards[name](*inputs), labels)
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)

        return run

    functions = {name: step(name) for name in models}
    if case == "loss":
        with autocast:
            outputs = sgdetr(*inputs, labels=labels)
        video_mask = inputs[1].bool()
        targets = prepare_targets(labels, inputs[0], video_mask, sgdetr.config.num_saliency_pairs)
        functions["loss"] = lambda: sgdetr.loss_function(
            sgdetr.config, outputs.encoder_outputs, outputs.detector_outputs, targets
        )
    return functions


def one_model_peak_memory(case: str, model: str, batch: int, args: argparse.Namespace) -> float:
    """Peak memory (CPU: RSS, CUDA: allocated) of a fresh process that runs only ``model``'s ``case`` (two calls)."""
    spec = strict_json({"case": case, "model": model, "batch": batch})
    command = [sys.executable, __file__, "--memory-of", spec, "--device", args.device, "--dtype", args.dtype]
    command += ["--threads", str(args.threads), "--clips", str(args.clips), "--tokens", str(args.tokens)]
    command += ["--dim", str(args.dim), "--windows", args.windows]
    command += ["--system-malloc"] if args.system_malloc else []
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])["peak_memory_mib"]


def run_case(case: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    models = build_models(args.dim, args.device)
    functions = case_functions(case, models, batch, args)
    unit = "queries" if case in ("inference", "postprocess") else "samples"
    row: dict[str, Any] = {"case": case, "batch": batch, "unit": unit}
    if case in ("postprocess", "loss"):  # SG-DETR's part against its whole
        whole = "sgdetr"
        timed = measure_interleaved(
            {whole: functions[whole], case: functions[case]}, args.rounds, 1, args.device
        )
        row.update(
            seconds=timed[case].best,
            whole_seconds=timed[whole].best,
            share_of_whole=timed[case].best / timed[whole].best,
            aten_ops=count_ops_and_flops(functions[case])[0],
        )
        return row
    # kernels and arithmetic are counted on the eager forward (a compiled one hides its kernels from the count);
    # with --compile the eager forwards are timed in the same rounds too, for the compile speed-up
    eager = (
        case_functions(case, models, batch, argparse.Namespace(**{**vars(args), "compile": False}))
        if args.compile
        else functions
    )
    timing = {name: functions[name] for name in models}
    if args.compile:
        timing.update({f"{name}:eager": eager[name] for name in models})
    timed = measure_interleaved(timing, args.rounds, 1, args.device)
    for name in models:
        ops = count_ops_and_flops(eager[name])[0]
        flops = count_ops_and_flops(eager.get(f"{name}:flops", eager[name]))[1]
        row[name] = {
            "seconds": timed[name].best,
            "median_seconds": timed[name].median,
            f"{unit}_per_s": batch / timed[name].best,
            "gflop_per_item": flops / batch / 1e9,
            "achieved_gflop_per_s": flops / timed[name].best / 1e9,
            "aten_ops": ops,
            "peak_memory_mib": None if args.no_memory else one_model_peak_memory(case, name, batch, args),
        }
        if args.compile:
            row[name]["compile_speedup"] = timed[f"{name}:eager"].best / timed[name].best
            # a compiled model's timings count only if it computes what the eager one does
            if case == "inference":
                deviation = largest_deviation(eager[name](), functions[name]())
                row[name]["compiled_output_deviation"] = deviation
                row[name]["compiled_outputs_match"] = deviation <= COMPILED_TOLERANCE[args.dtype]
                if not row[name]["compiled_outputs_match"]:
                    logger.warning(
                        "%s, %s batch %d: the compiled model's outputs are off the eager model's by %.2g of their "
                        "largest value: its timings are not those of a working model",
                        name, case, batch, deviation,
                    )  # fmt: skip
        # profiled eager, as the op count: a compiled forward fuses kernels the split would not classify
        if args.profile:
            row[name]["profile"] = kernel_time_split(eager[name], args.device)
    sg, ref = row["sgdetr"], row["reference"]
    row["throughput_ratio"] = sg[f"{unit}_per_s"] / ref[f"{unit}_per_s"]
    row["flop_ratio"] = sg["gflop_per_item"] / ref["gflop_per_item"]
    row["flop_efficiency_ratio"] = sg["achieved_gflop_per_s"] / ref["achieved_gflop_per_s"]
    if args.profile:
        # the most any work on SG-DETR's other kernels could give: the reference as it is, SG-DETR's matrix
        # kernels alone (both profiled)
        row["throughput_ratio_if_sgdetr_non_matrix_free"] = (
            ref["profile"]["total_ms"] / sg["profile"]["matrix_ms"]
        )
    return row


def printed_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    printed = []
    for row in rows:
        if "share_of_whole" in row:
            whole = "forward" if row["case"] == "postprocess" else "training step"
            printed.append({
                "case": f"{row['case']} (SG-DETR), batch {row['batch']}",
                "SG-DETR": f"{1000 * row['seconds']:.1f} ms, {row['aten_ops']} ops",
                "reference": "",
                "ratio": f"{100 * row['share_of_whole']:.1f}% of the {whole}",
            })  # fmt: skip
            continue
        unit = row["unit"]
        cells = {
            name: f"{row[name][f'{unit}_per_s']:.1f} {unit}/s, {row[name]['gflop_per_item']:.2f} GFLOP, "
            f"{row[name]['achieved_gflop_per_s']:.0f} GFLOP/s, {row[name]['aten_ops']} ops"
            + ("" if row[name]["peak_memory_mib"] is None else f", {row[name]['peak_memory_mib']:.0f} MiB")
            + ("" if "compile_speedup" not in row[name] else f", {row[name]['compile_speedup']:.2f}x eager")
            + (
                f", COMPILED OUTPUTS OFF BY {row[name]['compiled_output_deviation']:.2g}"
                if row[name].get("compiled_outputs_match") is False
                else ""
            )
            for name in ("sgdetr", "reference")
        }
        printed.append({
            "case": f"{row['case']}, batch {row['batch']}",
            "SG-DETR": cells["sgdetr"],
            "reference": cells["reference"],
            "ratio": f"{row['throughput_ratio']:.2f}x throughput, {row['flop_efficiency_ratio']:.2f}x GFLOP/s",
        })  # fmt: skip
    return printed


def printed_profiles(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The ``--profile`` table: matrix kernels' share of each model's profiled time, SG-DETR's top kernels."""
    printed = []
    for row in rows:
        if "throughput_ratio_if_sgdetr_non_matrix_free" not in row:
            continue
        shares = {
            name: f"{100 * row[name]['profile']['matrix_ms'] / row[name]['profile']['total_ms']:.0f}% of "
            f"{row[name]['profile']['total_ms']:.1f} ms"
            for name in ("sgdetr", "reference")
        }
        printed.append({
            "case": f"{row['case']}, batch {row['batch']}",
            "SG-DETR matrix kernels": shares["sgdetr"],
            "reference matrix kernels": shares["reference"],
            "SG-DETR top kernels (ms)": ", ".join(
                f"{name.removeprefix('aten::')} {ms:.1f}" for name, ms, _ in row["sgdetr"]["profile"]["top_ops"]
            ),
            "ratio if SG-DETR's other kernels took no time": f"{row['throughput_ratio_if_sgdetr_non_matrix_free']:.2f}x",
        })  # fmt: skip
    return printed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16: autocast"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--clips", type=int, default=75)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--dim", type=int, default=512, help="video and text feature width")
    parser.add_argument(
        "--windows",
        default="1-3",
        choices=WINDOW_COUNT_CHOICES,
        help="windows per training sample: uniform on 1-3 (default), or drawn from QVHighlights' training split "
        f"and capped at {SGDetrConfig.max_gt_windows} as training does (a batch's largest count sets its "
        "denoising queries)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per case (best of them is kept)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models first")
    parser.add_argument(
        "--compile-mode",
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="torch.compile's mode (with --compile); reduce-overhead replays CUDA graphs on a GPU, where the "
        "small-op forward is bound by per-op overhead",
    )
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="with --compile: Inductor's freezing (torch._inductor.config.freezing), which folds the weights of "
        "inference graphs into constants and pre-packs them for the CPU's GEMM library; training graphs are "
        "compiled as without it",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the per-model peak-memory processes")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile each model's eager case (torch.profiler, after the timed rounds): the matrix kernels' "
        "share of its time, SG-DETR's top kernels, and the ratio SG-DETR would reach if its other kernels took no time",
    )
    add_system_malloc_argument(parser)
    parser.add_argument(
        "--cases",
        nargs="+",
        default=list(CASES),
        choices=list(CASES),
        help="cases to run (default: all); e.g. --cases inference with --compile, whose compile time is long on CPU",
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: one model's case in this process
    args = parser.parse_args()
    if args.compile_mode and not args.compile:
        parser.error("--compile-mode needs --compile")
    if args.freeze and not args.compile:
        parser.error("--freeze needs --compile")
    if args.dtype == "bfloat16" and torch.device(args.device).type == "cpu":
        # nn.TransformerEncoderLayer leaves its fused inference path on under CPU autocast (it checks CUDA
        # autocast only), and that path then mixes bfloat16 and float32
        parser.error("--dtype bfloat16 is for CUDA devices: on CPU the reference's fused layers mix dtypes")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if args.freeze:
        from torch._inductor import config as inductor_config  # about 2 s to import: only when asked for

        # read when a graph is compiled, at a compiled model's first call: both models alike
        inductor_config.freezing = True
    malloc = malloc_setting(args.system_malloc, args.device)

    if args.memory_of:
        spec = json.loads(args.memory_of)
        models = build_models(args.dim, args.device, (spec["model"],))  # only the measured model in memory
        function = case_functions(spec["case"], models, spec["batch"], args)[spec["model"]]
        print(strict_json({"peak_memory_mib": measure(function, 1, 1, args.device).peak_memory_mib}))
        return 0

    plan = [("inference", 1), ("inference", args.batch_size), ("postprocess", args.batch_size)]
    plan += [("training", args.batch_size), ("loss", args.batch_size)]
    plan = [(case, batch) for case, batch in plan if case in args.cases]
    rows = []
    for case, batch in plan:
        rows.append(run_case(case, batch, args))
        logger.info(strict_json(rows[-1]))
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "CPU"
    frozen = ", freezing" if args.freeze else ""
    compiled = f", torch.compile (mode {args.compile_mode or 'default'}{frozen})" if args.compile else ""
    header = (
        f"{device}, {args.threads} threads, {args.dtype}{compiled}, "
        f"torch {torch.__version__}, {malloc}; L={args.clips}, N={args.tokens}, d={args.dim}, windows "
        f"{args.windows}; best of {args.rounds} rounds"
    )
    print(f"\n{header}\n")
    print_table(printed_rows(rows))
    if args.profile:
        print(
            "\nProfiled (torch.profiler self time of every kernel; profiling slows small kernels the most)\n"
        )
        print_table(printed_profiles(rows))
    if args.json:
        write_json(args.json, {"setup": header, "argv": sys.argv[1:], "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
