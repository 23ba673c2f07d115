"""QVHighlights evaluation speed: ``sgdetr_hf.metrics`` vs the official Moment-DETR ``standalone_eval``.

Times the full val evaluation (1550 queries, MR + HL) of the official sample predictions, checks that
both give identical numbers, and prints both times and peak memory.

    python scripts/benchmark_metrics.py
    python scripts/benchmark_metrics.py --official-dir /tmp/moment_detr --official-python /tmp/venv/bin/python

``--official-dir`` is a checkout of Moment-DETR (github.com/jayleicn/moment_detr; its ``standalone_eval/``
folder, not part of this repository) and ``--official-python`` an interpreter with numpy and
scikit-learn for it. The official code is timed in a subprocess twice: single-process (its worker
pools replaced by the in-process path, ``num_workers=1``) and as shipped (pools of 8 workers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from sgdetr_hf.benchmarking import Measurement, measure, peak_rss_mib
from sgdetr_hf.metrics import compute_metrics, read_jsonl

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_PREDICTIONS = SHARED_DATA / "qvhighlights_eval_conformance" / "sample_val_preds.jsonl"
DEFAULT_ANNOTATIONS = SHARED_DATA / "qvhighlights" / "highlight_val_release.jsonl"

# Run by --official-python: times the official eval_submission (rows loaded beforehand, as for ours)
# with its worker pools (default) or with num_workers=1; prints {"seconds": [...], "metrics": {...},
# "peak_mib": ...}. The peak is this process's own high-water mark (VmHWM): ru_maxrss of a child would
# include the parent's pages copied by fork.
_OFFICIAL_DRIVER = """
import contextlib, functools, io, json, sys, time

official_dir, predictions, annotations, single_process, repeats = sys.argv[1:6]
sys.path.insert(0, official_dir)
from standalone_eval import eval as official
from standalone_eval.utils import load_jsonl

def in_process(function, *args, **kwargs):
    kwargs["num_workers"] = 1
    return function(*args, **kwargs)

if single_process == "1":
    official.compute_mr_ap = functools.partial(in_process, official.compute_mr_ap)
    official.compute_hl_ap = functools.partial(in_process, official.compute_hl_ap)
submission, ground_truth = load_jsonl(predictions), load_jsonl(annotations)
seconds = []
for _ in range(int(repeats)):
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints bucket sizes even when not verbose
        metrics = official.eval_submission(submission, ground_truth, verbose=False)
    seconds.append(time.perf_counter() - start)
with open("/proc/self/status") as status:
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "metrics": metrics, "peak_mib": peak_kib / 1024}, allow_nan=False))
"""


def time_ours(
    predictions_path: Path, annotations_path: Path, repeats: int
) -> tuple[Measurement, Measurement]:
    """The timings of computing the metrics (``result``: the metrics) and of reading the files + computing."""

    def read() -> tuple[list[dict], list[dict]]:
        return read_jsonl(predictions_path), read_jsonl(annotations_path)

    loaded = read()
    compute = measure(lambda: compute_metrics("qvhighlights", *loaded), repeats)
    read_and_compute = measure(lambda: compute_metrics("qvhighlights", *read()), repeats)
    return compute, read_and_compute


def time_official(args: argparse.Namespace, single_process: bool) -> tuple[list[float], dict, float]:
    """(seconds per repeat, metrics, peak RSS of the main process in MiB) of the official code."""
    command = [
        args.official_python,
        "-c",
        _OFFICIAL_DRIVER,
        str(args.official_dir),
        str(args.predictions),
        str(args.annotations),
        "1" if single_process else "0",
        str(args.official_repeats),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the official evaluation failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.splitlines()[-1])
    return result["seconds"], result["metrics"], result["peak_mib"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=Path, default=DEFAULT_PREDICTIONS)
    parser.add_argument("--annotations", type=Path, default=DEFAULT_ANNOTATIONS)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of ours")
    parser.add_argument("--official-dir", type=Path, help="Moment-DETR checkout holding standalone_eval/")
    parser.add_argument("--official-python", default=sys.executable, help="interpreter for the official code")
    parser.add_argument("--official-repeats", type=int, default=3, help="timed runs of the official code")
    args = parser.parse_args()

    import_mib = peak_rss_mib()  # the package (torch, transformers)
    compute, read_and_compute = time_ours(args.predictions, args.annotations, args.repeats)
    ours, ours_median = compute.result, compute.median
    peak_mib = peak_rss_mib()
    queries = len({row["qid"] for row in read_jsonl(args.predictions)})
    print(f"queries: {queries} (QVHighlights MR + HL, {args.predictions.name})")
    print(
        f"sgdetr_hf.metrics: compute {ours_median * 1e3:.0f} ms median (min {compute.best * 1e3:.0f} ms, "
        f"{queries / ours_median:,.0f} queries/s); read + compute {read_and_compute.median * 1e3:.0f} ms; "
        f"peak RSS {peak_mib:.0f} MiB ({import_mib:.0f} MiB after importing sgdetr_hf); {args.repeats} runs, "
        "single process"
    )
    if args.official_dir is None:
        print("official: not run (pass --official-dir and --official-python)")
        return 0
    for single_process, label in ((True, "single process"), (False, "as shipped, pools of 8 workers")):
        seconds, official, official_mib = time_official(args, single_process)
        median = statistics.median(seconds)
        same = json.dumps(official) == json.dumps(ours)
        print(
            f"official standalone_eval ({label}): {median:.2f} s median (min {min(seconds):.2f} s, "
            f"{args.official_repeats} runs, peak RSS of its main process {official_mib:.0f} MiB); "
            f"ours is {median / ours_median:.0f}x faster; identical numbers: {same}"
        )
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
