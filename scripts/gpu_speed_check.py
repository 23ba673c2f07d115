"""The GPU speed check of a short device lease, as one command: ``scripts/benchmark_speed.py`` in the settings
the README's "On a GPU" section reports, most needed first, each in its own process under its share of one
time budget, so that a lease's minutes end with whatever finished written down.

    .venv/bin/python scripts/gpu_speed_check.py --download-wheels .whl         # here, before the lease
    python3 scripts/gpu_speed_check.py --out "$OUT" --budget-s 540 --wheels .whl   # on the GPU machine

The lease's machine image has older transformers and huggingface_hub than the package needs (5.17 and 1.33
where it needs >= 5.24 and >= 2.4) and nothing can be installed there from an index, so ``--download-wheels``
fetches, on a machine that reaches PyPI, the wheels of the versions this checkout is tested with (and of what
they need) for the image's Python; the lease's call carries that folder and ``--wheels`` installs it into a
temporary folder that every run imports first. Before any run, the machine's probe imports the package as the
runs will: where that fails, the summary says why and nothing runs.

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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = REPO / "scripts" / "benchmark_speed.py"
# the checkout's package, installed or not (a device machine has it bare)
sys.path.insert(0, str(REPO / "src"))

from sgdetr_hf.files import atomic_write_text  # noqa: E402 - after the path it comes from

#: the packages a lease carries, at the versions installed here (what CI tests), with what they need
CARRIED = ("transformers", "huggingface_hub")
#: never carried: the image's torch and scientific stack are built against its own
IMAGE_KEEPS = ("numpy", "torch")
#: the lease's machine image (.library/device/KINDS.md): Python 3.12 on x86-64 Linux
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64"]
#: a device call carries at most 64 MiB with the working tree
WHEELS_LIMIT_MIB = 48

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


def child_environment(site: Path | None) -> dict[str, str]:
    """The environment of the probe and of every run: this checkout's ``src``, then the carried wheels' folder,
    before whatever ``PYTHONPATH`` already holds (so both come before the image's own packages)."""
    paths = [str(REPO / "src"), str(site) if site else None, os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(filter(None, paths))}


def machine_lines(device: str, site: Path | None = None) -> tuple[list[str], bool]:
    """What the runs ran on (host, Python, torch, the GPU on CUDA, transformers), read in a child that imports the
    package as the runs will (no CUDA context here), and whether that import worked."""
    probe = (
        "import torch; print('torch', torch.__version__);"
        "print('GPU', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none');"
        "import transformers; print('transformers', transformers.__version__);"
        "from sgdetr_hf import SGDetrForMomentRetrieval"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_environment(site),
    )
    try:  # a device machine may get the working tree without its .git, or have no git
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    lines = [
        f"- host: {platform.node()}, {platform.machine()}, Python {platform.python_version()}, device `{device}`",
        *(f"- {line}" for line in found.stdout.strip().splitlines()),
        f"- checkout: {commit or 'unknown (no git here): see --label'}",
    ]
    if found.returncode != 0:
        reason = (found.stderr.strip().splitlines() or ["(no output)"])[-1]
        lines.append(f"- the package does not import here: {reason}")
    return lines, found.returncode == 0


def wheel_name_version(wheel: Path) -> tuple[str, str]:
    """A wheel file's project and version: ``huggingface_hub-2.5.0-py3-none-any.whl`` -> ``huggingface_hub``,
    ``2.5.0`` (a wheel's name never holds a ``-``)."""
    name, version, *_ = wheel.name.split("-")
    return name, version


def write_summary(out: Path, lines: list[str]) -> None:
    """``summary.md`` of ``out``, whole: the lease may end at any moment."""
    atomic_write_text(out / "summary.md", "\n".join(["# GPU speed check", "", *lines]) + "\n")


def download_wheels(folder: Path, python_version: str = DEVICE_PYTHON) -> None:
    """Fills ``folder`` (replacing the wheels it held) with the wheels of :data:`CARRIED` at the versions installed
    here and of everything they need, for the lease's Python and platform, less :data:`IMAGE_KEEPS`. Runs pip
    (here, where PyPI is reached) and prints what the folder holds."""
    if folder.exists() and any(not path.name.endswith(".whl") for path in folder.iterdir()):
        raise SystemExit(
            f"{folder} holds files other than wheels: name an empty folder or one of wheels only"
        )
    try:
        requirements = [f"{name}=={metadata.version(name)}" for name in CARRIED]
    except metadata.PackageNotFoundError as missing:
        raise SystemExit(
            f"{missing.name} is not installed in this Python ({sys.executable}): run --download-wheels with "
            "the project's environment, e.g. .venv/bin/python (./run test makes it), so the lease gets the "
            "tested versions"
        ) from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wheels-", dir=folder.parent))
    try:
        platforms = [option for name in DEVICE_PLATFORMS for option in ("--platform", name)]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--implementation", "cp",
             "--python-version", python_version, *platforms, "--dest", str(staging), *requirements],
            check=True,
        )  # fmt: skip
        for wheel in staging.glob("*.whl"):
            if wheel_name_version(wheel)[0].lower() in IMAGE_KEEPS:
                wheel.unlink()
        wheels = list(staging.glob("*.whl"))
        size_mib = sum(wheel.stat().st_size for wheel in wheels) / 2**20
        if size_mib > WHEELS_LIMIT_MIB:
            raise SystemExit(
                f"the wheels take {size_mib:.0f} MiB, over the {WHEELS_LIMIT_MIB} MiB a lease carries"
            )
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)  # the folder is whole or as it was: never a mix of two downloads
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{len(wheels)} wheels, {size_mib:.1f} MiB, in {folder}")


def install_wheels(folder: Path) -> Path:
    """Installs the wheels of ``folder`` (no index, no dependency resolution: the folder is the whole set) into a
    new temporary folder, outside ``--out``, and returns it."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise SystemExit(
            f"no wheels in {folder}: make them with --download-wheels {folder} where PyPI is reached"
        )
    site = Path(tempfile.mkdtemp(prefix="sgdetr-wheels-"))
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
             "--no-cache-dir", "--target", str(site), *map(str, wheels)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(site, ignore_errors=True)
        raise
    return site


def run_one(command: list[str], timeout: float, log, site: Path | None = None) -> tuple[str, str]:
    """Runs ``command`` in its own process group (the benchmark's memory processes die with it); returns its status
    and output."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_environment(site),
        start_new_session=True,
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
    parser.add_argument("--out", type=Path, help="folder for summary.md, log.txt and the JSONs")
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
    parser.add_argument(
        "--wheels", type=Path, help="a folder made by --download-wheels: installed for the runs first"
    )
    parser.add_argument(
        "--download-wheels",
        type=Path,
        metavar="FOLDER",
        help="only fill FOLDER with the wheels a lease carries (run where PyPI is reached), then exit",
    )
    parser.add_argument(
        "--python-version", default=DEVICE_PYTHON, help="with --download-wheels: the lease's Python"
    )
    args = parser.parse_args(argv)
    if args.download_wheels:
        download_wheels(args.download_wheels, args.python_version)
        return 0
    if args.out is None:
        parser.error("--out is required (or --download-wheels FOLDER)")
    start = time.monotonic()  # the budget covers installing the wheels and the machine's probe too
    chosen = args.runs.split(",")
    known = [name for name, _, _ in RUNS]
    if unknown := sorted(set(chosen) - set(known)):
        parser.error(f"unknown runs {unknown}; known: {', '.join(known)}")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        site = install_wheels(args.wheels) if args.wheels else None
    except subprocess.CalledProcessError as error:  # e.g. wheels for another Python: say so in the summary
        why = [f"    {line}" for line in error.stderr.strip().splitlines()[-5:]]
        write_summary(args.out, ["## nothing run: the carried wheels did not install", "", *why])
        return 1
    try:
        return run_all(args, chosen, site, start)
    finally:
        if site:
            shutil.rmtree(site, ignore_errors=True)


def run_all(args: argparse.Namespace, chosen: list[str], site: Path | None, start: float) -> int:
    """The probe, then each chosen run while the budget lasts; ``summary.md`` rewritten after each."""
    plan = {name: (options, limit) for name, options, limit in RUNS}
    machine, imports = machine_lines(args.device, site)
    carried = (
        sorted(" ".join(wheel_name_version(wheel)) for wheel in args.wheels.glob("*.whl")) if site else []
    )
    summary = [
        *machine,
        *([f"- {args.label}"] if args.label else []),
        *([f"- carried wheels: {', '.join(carried)}"] if carried else []),
        "",
    ]

    def save() -> None:  # after every run: what finished is on disk if the lease ends during the next
        write_summary(args.out, summary)

    if not imports:
        fix = (
            "the carried wheels did not make it import"
            if site
            else "carry the wheels: --download-wheels FOLDER where PyPI is reached, then --wheels FOLDER here"
        )
        summary += [f"## nothing run: the package does not import here ({fix})", ""]
        save()
        return 1
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
            status, output = run_one(command, min(limit, left), log, site)
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
