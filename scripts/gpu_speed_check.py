"""The GPU speed check of a short device lease, as one command: ``scripts/benchmark_speed.py`` in the settings
the README's "On a GPU" section reports, most needed first, each in its own process under its share of one
time budget, so that a lease's minutes end with whatever finished written down.

    python3 scripts/gpu_speed_check.py --out "$OUT" --budget-s 540        # on the GPU machine

Writes into ``--out``: ``summary.md`` (the machine, then each run's status, time and result table, rewritten
after every run), ``log.txt`` (every run's output) and one ``<run>.json`` per finished run (the benchmark's
JSON). That is at most eight files, what a device lease hands back. The package is imported from this checkout's
``src`` (no installation needed there). A run that would get under ``--min-run-s`` of the budget is skipped.
Exits 0 when every run that started finished, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = REPO / "scripts" / "benchmark_speed.py"
# the checkout's package, installed or not (a device machine has it bare)
sys.path.insert(0, str(REPO / "src"))

from sgdetr_hf.files import atomic_write_text  # noqa: E402 - after the path it comes from

INFERENCE = ["--no-memory", "--cases", "inference"]
#: (name, benchmark arguments, longest run in seconds), most needed first; peak memory (a process per model and
#: case) only in the first
RUNS = [
    ("fp32", ["--dtype", "float32", "--rounds", "20"], 180),
    ("bf16", ["--dtype", "bfloat16", "--rounds", "20", "--no-memory"], 120),
    ("bf16_compile", ["--dtype", "bfloat16", "--compile", *INFERENCE], 150),
    (
        "bf16_cudagraphs",
        ["--dtype", "bfloat16", "--compile", "--compile-mode", "reduce-overhead", *INFERENCE],
        150,
    ),
    ("fp32_compile", ["--dtype", "float32", "--compile", *INFERENCE], 150),
    (
        "bf16_compile_training",
        ["--dtype", "bfloat16", "--compile", "--no-memory", "--cases", "training"],
        200,
    ),
]


def machine_lines(device: str) -> list[str]:
    """What the runs ran on: host, Python, torch and, on CUDA, the GPU (read in a child: no CUDA context here)."""
    probe = (
        "import torch; print('torch', torch.__version__);"
        "print('GPU', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    try:  # a device machine may get the working tree without its .git, or have no git
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return [
        f"- host: {platform.node()}, {platform.machine()}, Python {platform.python_version()}, device `{device}`",
        *(f"- {line}" for line in (found.stdout or found.stderr).strip().splitlines()),
        f"- checkout: {commit or 'unknown (no git here): see --label'}",
    ]


def run_one(command: list[str], timeout: float, log) -> tuple[str, str]:
    """Runs ``command`` in its own process group (the benchmark's memory processes die with it); returns its status
    and output."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        status = "finished" if process.returncode == 0 else f"failed (exit {process.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        status = f"stopped at its {timeout:.0f} s limit"
    log.write(output)
    log.flush()
    return status, output


def result_lines(status: str, output: str) -> list[str]:
    """The benchmark's result table, or the last lines that say why there is none."""
    lines = output.strip().splitlines()
    table = [line for line in lines if line.startswith("| ")]
    return table if status == "finished" and table else [f"    {line}" for line in lines[-5:]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for summary.md, log.txt and the JSONs"
    )
    parser.add_argument("--budget-s", type=float, default=540, help="seconds for all runs together")
    parser.add_argument(
        "--min-run-s", type=float, default=30, help="skip a run that would get less than this"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--label", default="", help="a line for the summary, e.g. the commit where git is absent"
    )
    parser.add_argument(
        "--runs", default=",".join(name for name, _, _ in RUNS), help="comma-separated, in order"
    )
    parser.add_argument(
        "--benchmark-args",
        default="",
        help="appended to every run (a later option wins), e.g. smaller shapes",
    )
    args = parser.parse_args(argv)
    start = time.monotonic()  # the budget covers the machine's probe too
    plan = {name: (options, limit) for name, options, limit in RUNS}
    chosen = args.runs.split(",")
    if unknown := sorted(set(chosen) - set(plan)):
        parser.error(f"unknown runs {unknown}; known: {', '.join(plan)}")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = [
        "# GPU speed check",
        "",
        *machine_lines(args.device),
        *([f"- {args.label}"] if args.label else []),
        "",
    ]

    def save() -> None:  # after every run: what finished is on disk if the lease ends during the next
        atomic_write_text(args.out / "summary.md", "\n".join(summary) + "\n")

    save()
    all_finished = True
    with open(args.out / "log.txt", "w", encoding="utf-8") as log:
        for name in chosen:
            options, limit = plan[name]
            left = args.budget_s - (time.monotonic() - start)
            if left < args.min_run_s:
                summary += [f"## {name}: skipped, {max(left, 0):.0f} s of the budget left", ""]
                save()
                continue
            command = [sys.executable, str(BENCHMARK), "--device", args.device, *options]
            command += ["--json", str(args.out / f"{name}.json"), *shlex.split(args.benchmark_args)]
            log.write(f"\n===== {name}: {shlex.join(command)}\n")
            began = time.monotonic()
            status, output = run_one(command, min(limit, left), log)
            all_finished &= status == "finished"
            summary += [
                f"## {name}: {status} in {time.monotonic() - began:.0f} s",
                "",
                f"`{shlex.join(options)}`",
                "",
            ]
            summary += [*result_lines(status, output), ""]
            save()
    return 0 if all_finished else 1


if __name__ == "__main__":
    sys.exit(main())
