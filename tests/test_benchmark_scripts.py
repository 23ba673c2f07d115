"""Smoke runs of scripts/benchmark_*.py at their smallest sizes: they run and report every measure.

The fast cases call each script in this process, with one torch thread (two threads spin against
each other on a shared 2-core machine). The ``slow`` case runs benchmark_processor.py from the command
line: its decord cases patch the video module for their whole (fresh) process.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import torch

from scripts_testing import SCRIPTS, load_script


def _run_main(monkeypatch, name, *args):
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    return load_script(name).main()


def _table(output: str) -> list[dict[str, str]]:
    """The rows of the Markdown table in ``output``, by column name."""
    lines = [line for line in output.splitlines() if line.startswith("| ")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [dict(zip(split[0], cells)) for cells in split[2:]]  # split[1]: the --- line


def _number(text: str) -> float:
    return float(text.split()[0].replace(",", ""))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_benchmark_data(monkeypatch, capsys):
    _run_main(monkeypatch, "benchmark_data", "--videos", "32", "--batches", "2")
    rows = {row["measure"]: _number(row["value"]) for row in _table(capsys.readouterr().out)}
    assert list(rows) == [
        "build (annotations + features -> Parquet + card), rows/s",
        "fetch + collate, batch 32, batches/s",
        "DataLoader (shuffle, 0 workers), batch 32, batches/s",
        "peak RSS, MiB",
    ]
    assert all(value > 0 for value in rows.values())


def test_benchmark_data_npz_release(monkeypatch, capsys, tmp_path):
    """The release is written in this process, built in a fresh one (its peak RSS is the build's)."""
    _run_main(monkeypatch, "benchmark_data", "npz", "--videos", "6", "--queries-per-video", "1.5",
              "--workdir", str(tmp_path))  # fmt: skip
    (row,) = _table(capsys.readouterr().out)
    assert (row["videos"], row["queries"], row["truncated_videos"]) == (
        "6",
        "9",
        "2",
    )  # every 3rd SlowFast +1
    assert all(
        _number(row[key]) > 0 for key in ("videos_per_s", "release_mb_per_s", "peak_rss_mib", "parquet_mib")
    )
    assert list(tmp_path.iterdir()) == []  # the release and the dataset are removed


def test_benchmark_metrics(monkeypatch, capsys, shared_data):
    assert _run_main(monkeypatch, "benchmark_metrics", "--repeats", "1") == 0
    output = capsys.readouterr().out
    assert "queries: 1550" in output and "compute " in output and "read + compute " in output
    assert "official: not run" in output


def test_benchmark_model_rows():
    benchmark = load_script("benchmark_model")
    shape = dict(batch=2, clips=16, tokens=8, device="cpu", dtype="float32", warmup=1, repeats=2)
    inference = benchmark.benchmark_row("inference", **shape)
    training = benchmark.benchmark_row("training", **shape)
    assert inference["queries_per_s"] == pytest.approx(2 / (inference["forward_ms"] / 1000))
    assert 0 < inference["queries_per_s_with_postprocess"] < inference["queries_per_s"]
    assert training["samples_per_s"] == pytest.approx(2 / (training["step_ms"] / 1000))
    assert min(inference["peak_memory_mb"], training["peak_memory_mb"]) > 100  # the process's RSS
    printed = benchmark.table_row(training)
    assert printed["time per batch"] == f"{training['step_ms']:.1f} ms"
    assert printed["throughput"].endswith(" samples/s") and printed["peak memory"].endswith(" MiB")


def test_benchmark_pipeline(monkeypatch, capsys):
    _run_main(monkeypatch, "benchmark_pipeline", "--minutes", "0.5", "--queries", "1", "2", "--repeats", "1")
    rows = _table(capsys.readouterr().out)
    assert [(row["video"], row["queries"], row["windows"]) for row in rows] == [
        ("0.5m", "1", "1"),
        ("0.5m", "2", "1"),
    ]
    for row in rows:
        assert _number(row["video-min/s"]) == pytest.approx(0.5 / _number(row["median s"]), rel=0.05, abs=0.1)


def test_benchmark_training(monkeypatch, capsys):
    _run_main(
        monkeypatch, "benchmark_training",
        "--batch-size", "2", "--num-clips", "16", "--num-tokens", "8", "--dim", "32", "--steps", "2",
        "--warmup", "1", "--system-malloc",  # the malloc setting is process-wide: not in the test process
    )  # fmt: skip
    output = capsys.readouterr().out
    assert "shape: batch 2, L=16, N=8, d=32" in output and "system malloc" in output
    for measure in ("samples/s", "process CPU time:", "peak host memory (max RSS):"):
        assert measure in output


def test_benchmark_processor_cases(tmp_path):
    benchmark = load_script("benchmark_processor")
    video = str(benchmark.generate_video(tmp_path / "video.mp4", duration=1.0))
    plain, processed = benchmark.plain_pyav(video), benchmark.processor_case(video, "pyav")
    assert plain["frames"] > 0 and processed["clips"] > 0
    assert plain["seconds"] > 0 and processed["seconds"] > 0
    encoder = benchmark.encoder_case("tiny")
    assert encoder["clips_per_second"] == pytest.approx(32 * 20 / encoder["seconds"])


def test_benchmark_data_layouts(tmp_path):
    benchmark = load_script("benchmark_data")
    rows = [benchmark.run_layout(layout, 20, 1.8, tmp_path, 2) for layout in ("rows", "join")]
    assert [(row["layout"], row["queries"], row["videos"]) for row in rows] == [
        ("rows", 36, 20),
        ("join", 36, 20),
    ]
    # the join layout stores each video's features once, not once per query
    assert rows[1]["parquet_mib"] < rows[0]["parquet_mib"]
    assert all(row["batches_per_s"] > 0 and row["peak_rss_mib"] > 100 for row in rows)


@pytest.mark.slow
def test_benchmark_processor_one_process_per_case(tmp_path):
    """The command line, as a user runs it: every case (decord's too) in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(SCRIPTS / "benchmark_processor.py"), "--duration", "1", "--repeats", "1"]
    done = subprocess.run(
        command + ["--video", str(tmp_path / "v.mp4")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    measured = {row["case"]: row for row in _table(done.stdout) if row["seconds"][0].isdigit()}
    expected = ["pyav-plain", "processor-pyav", "processor-decord", "decord-in-process", "encoder-tiny"]
    assert list(measured) == expected + ["encoder-1b"] * torch.cuda.is_available()
    assert all(_number(row["peak RSS MB"]) > 100 for row in measured.values())
    assert _number(measured["encoder-tiny"]["clips/s"]) > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--compile-mode", "reduce-overhead"], "--compile-mode needs --compile"),
        (["--freeze"], "--freeze needs --compile"),
        (["--dtype", "bfloat16", "--device", "cpu"], "--dtype bfloat16 is for CUDA devices"),
    ],
)
def test_benchmark_speed_refuses_settings_it_cannot_measure(monkeypatch, capsys, args, message):
    small = [
        "--batch-size",
        "1",
        "--clips",
        "4",
        "--tokens",
        "3",
        "--dim",
        "8",
        "--rounds",
        "1",
        "--no-memory",
    ]
    with pytest.raises(SystemExit):  # the small run: a setting let through fails quickly, not after minutes
        _run_main(monkeypatch, "benchmark_speed", *args, *small, "--cases", "postprocess", "--system-malloc")
    assert message in capsys.readouterr().err


def test_benchmark_speed_reports_every_case_and_ratio(monkeypatch, capsys, tmp_path):
    path = tmp_path / "speed.json"
    args = ["--threads", "1", "--batch-size", "2", "--clips", "12", "--tokens", "5", "--dim", "16"]
    # the malloc setting is process-wide: not in the test process
    args += ["--rounds", "1", "--no-memory", "--system-malloc", "--profile"]
    assert _run_main(monkeypatch, "benchmark_speed", *args, "--json", str(path)) == 0
    written = json.loads(path.read_text())
    assert "system malloc" in written["setup"]
    rows = {(row["case"], row["batch"]): row for row in written["rows"]}
    assert set(rows) == {("inference", 1), ("inference", 2), ("postprocess", 2), ("training", 2), ("loss", 2)}
    for key in [("inference", 1), ("inference", 2), ("training", 2)]:
        row = rows[key]
        for model in ("sgdetr", "reference"):
            assert (
                row[model]["gflop_per_item"] > 0 and row[model]["aten_ops"] > 0 and row[model]["seconds"] > 0
            )
        assert row["throughput_ratio"] == pytest.approx(
            row["reference"]["seconds"] / row["sgdetr"]["seconds"]
        )
        profiles = {model: row[model]["profile"] for model in ("sgdetr", "reference")}
        assert all(0 < p["matrix_ms"] < p["total_ms"] and len(p["top_ops"]) == 5 for p in profiles.values())
        assert row["throughput_ratio_if_sgdetr_non_matrix_free"] == pytest.approx(
            profiles["reference"]["total_ms"] / profiles["sgdetr"]["matrix_ms"]
        )
    # the reference's FLOPs are those of its layers (counted off the fused inference kernel): 3 + 3 layers
    assert (
        rows[("inference", 2)]["reference"]["gflop_per_item"]
        > rows[("inference", 1)]["reference"]["gflop_per_item"] * 0.9
    )
    assert rows[("postprocess", 2)]["share_of_whole"] > 0 and rows[("loss", 2)]["share_of_whole"] > 0
    timings, profiled = capsys.readouterr().out.split("Profiled")
    assert [row["case"] for row in _table(timings)][:2] == ["inference, batch 1", "inference, batch 2"]
    profile_rows = _table(profiled)
    assert [row["case"] for row in profile_rows] == [
        "inference, batch 1",
        "inference, batch 2",
        "training, batch 2",
    ]
    assert all("addmm" in row["SG-DETR top kernels (ms)"] for row in profile_rows)


def test_gpu_speed_check_reports_each_run(tmp_path):
    """The lease's one command, on CPU at the smallest size: a run that finishes leaves its JSON and result table,
    one that fails (bfloat16 is refused on CPU) the reason it gives."""
    small = "--cases loss --batch-size 2 --clips 8 --tokens 4 --dim 16 --rounds 1 --no-memory --system-malloc"
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPTS / "gpu_speed_check.py"), "--out", str(out), "--device", "cpu"]
    done = subprocess.run(
        [*command, "--runs", "fp32,bf16", "--label", "checkout abc1234", "--benchmark-args", small],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the refused bfloat16 run
    summary = (out / "summary.md").read_text()
    assert "- torch 2.13" in summary and "- GPU none" in summary and "- checkout abc1234" in summary
    assert "## fp32: finished in" in summary and "| loss (SG-DETR), batch 2 |" in summary
    assert "## bf16: failed (exit 2)" in summary and "--dtype bfloat16 is for CUDA devices" in summary
    (row,) = json.loads((out / "fp32.json").read_text())["rows"]
    assert row["case"] == "loss" and row["share_of_whole"] > 0
    assert sorted(path.name for path in out.iterdir()) == ["fp32.json", "log.txt", "summary.md"]
    assert "===== bf16:" in (out / "log.txt").read_text()


def test_gpu_speed_check_keeps_to_its_budget(tmp_path, monkeypatch):
    """A run past its limit is killed with its process group and reported, and a run the budget's rest cannot
    fit is skipped."""
    script = load_script("gpu_speed_check")
    monkeypatch.setattr(script, "BENCHMARK", tmp_path / "sleeper.py")
    (tmp_path / "sleeper.py").write_text(
        "import subprocess, sys, time\n"
        "if '--cases' in sys.argv:\n"
        "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"  # a memory process
        "    time.sleep(60)\n"
        "print('| case | value |'); print('| --- | --- |'); print('| quick | 1 |')\n"
    )
    runs = [("quick", [], 60), ("slow", ["--cases", "x"], 2), ("late", [], 60)]
    monkeypatch.setattr(script, "RUNS", runs)
    monkeypatch.setattr(script, "machine_lines", lambda device, site: ([], True))  # its probe takes ~3 s
    # quick (well under 1.5 s), then slow (killed at 2 s) leave under 3 s of the 5: late is skipped
    options = ["--out", str(tmp_path / "out"), "--device", "cpu", "--budget-s", "5", "--min-run-s", "3.5"]
    began = time.monotonic()
    assert script.main(options) == 1
    assert time.monotonic() - began < 30  # the memory process died with the run (else its 60 s held the pipe)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## quick: finished in" in summary and "| quick | 1 |" in summary
    assert "## slow: stopped at its 2 s limit" in summary
    assert "## late: skipped" in summary


def _fake_transformers_wheel(folder: Path) -> Path:
    """A wheel whose ``transformers`` cannot be imported: proof, where its error shows, that the runs import the
    carried wheels before the machine's own packages."""
    wheel = folder / "transformers-0.0.1-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    info = "transformers-0.0.1.dist-info"
    files = {
        "transformers/__init__.py": "raise ImportError('the carried stand-in for transformers')\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: transformers\nVersion: 0.0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def test_gpu_speed_check_runs_nothing_where_the_package_does_not_import(tmp_path):
    """The lease image's transformers is older than the package needs: the probe imports the package as the runs
    would, and where that fails the summary says why and how to carry the wheels, and no run starts."""
    shadow = tmp_path / "shadow" / "transformers"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('an image without the transformers it needs')\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_speed_check.py"), "--out", str(out), "--device", "cpu",
         "--budget-s", "1"],  # were the runs started, the probe would have used up their budget
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(shadow.parent)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    summary = (out / "summary.md").read_text()
    assert (
        "- the package does not import here: ImportError: an image without the transformers it needs"
        in summary
    )
    assert "## nothing run" in summary and "--download-wheels FOLDER" in summary
    assert sorted(path.name for path in out.iterdir()) == ["summary.md"]  # no run, no log


def test_gpu_speed_check_imports_the_carried_wheels_first(tmp_path, monkeypatch):
    """``--wheels`` installs the folder's wheels for the probe and the runs, ahead of the machine's packages, in a
    temporary folder outside ``--out`` that is removed at the end."""
    script = load_script("gpu_speed_check")
    wheels = tmp_path / "wheels"
    _fake_transformers_wheel(wheels)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temporary"))
    (tmp_path / "temporary").mkdir()
    out = tmp_path / "out"
    # a budget the probe uses up: were the stand-in not imported, the runs would be skipped, not started
    options = ["--out", str(out), "--device", "cpu", "--wheels", str(wheels), "--budget-s", "1"]
    assert script.main(options) == 1
    summary = (out / "summary.md").read_text()
    assert "- carried wheels: transformers 0.0.1" in summary
    assert "does not import here: ImportError: the carried stand-in for transformers" in summary
    assert "## nothing run: the package does not import here (the carried wheels did not" in summary
    assert list((tmp_path / "temporary").iterdir()) == []  # the installed wheels are gone


def test_gpu_speed_check_reports_wheels_that_do_not_install(tmp_path):
    """A carried wheel pip cannot install (here not a wheel at all) leaves a summary that says so, and no run."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip archive")
    out = tmp_path / "out"
    script = load_script("gpu_speed_check")
    assert script.main(["--out", str(out), "--device", "cpu", "--wheels", str(wheels)]) == 1
    summary = (out / "summary.md").read_text()
    assert "## nothing run: the carried wheels did not install" in summary and "broken-1.0" in summary
    assert sorted(path.name for path in out.iterdir()) == ["summary.md"]


def test_gpu_speed_check_downloads_the_tested_versions_for_the_lease(tmp_path, monkeypatch):
    """``--download-wheels`` asks pip for the versions installed here, as wheels for the lease's Python, keeps the
    image's numpy and torch out, and replaces the folder's wheels whole; a folder with other files is refused."""
    script = load_script("gpu_speed_check")
    calls = []

    def pip(command, check):  # stands in for pip download: writes what it would fetch
        calls.append(command)
        dest = Path(command[command.index("--dest") + 1])
        fetched = ["transformers-9.0.0-py3-none-any.whl", "huggingface_hub-2.5.0-py3-none-any.whl",
                   "numpy-2.5.5-cp312-cp312-manylinux_2_28_x86_64.whl", "torch-2.13.0-cp312-cp312-linux_x86_64.whl"]  # fmt: skip
        for name in fetched:
            (dest / name).write_bytes(b"wheel")

    monkeypatch.setattr(script.subprocess, "run", pip)
    folder = tmp_path / ".whl"
    folder.mkdir()
    (folder / "transformers-8.0.0-py3-none-any.whl").write_bytes(b"an older download")
    assert script.main(["--download-wheels", str(folder)]) == 0
    (command,) = calls
    assert command[command.index("--python-version") + 1] == "3.12" and "--only-binary=:all:" in command
    assert f"transformers=={metadata.version('transformers')}" in command
    assert f"huggingface_hub=={metadata.version('huggingface_hub')}" in command
    assert sorted(path.name for path in folder.iterdir()) == [
        "huggingface_hub-2.5.0-py3-none-any.whl",
        "transformers-9.0.0-py3-none-any.whl",
    ]  # the older download replaced, numpy and torch left to the image
    assert sorted(path.name for path in tmp_path.iterdir()) == [".whl"]  # no staging folder left
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="holds files other than wheels"):
        script.main(["--download-wheels", str(folder)])
    # a Python without the package's environment has no tested versions to give the lease
    monkeypatch.setattr(script, "CARRIED", ("transformers", "no-such-package-here"))
    with pytest.raises(SystemExit, match="no-such-package-here is not installed in this Python"):
        script.main(["--download-wheels", str(tmp_path / "elsewhere")])
    assert calls == [command]  # pip was not asked


def test_benchmark_speed_flags_a_compiled_model_that_computes_something_else():
    """--compile's inference rows carry the compiled outputs' deviation from the eager ones; the table names a
    compiled model whose outputs are off (Inductor's max-autotune with freezing did that to the ATSS head)."""

    def model(match: bool) -> dict:
        return {"queries_per_s": 10.0, "gflop_per_item": 1.0, "achieved_gflop_per_s": 10.0, "aten_ops": 5,
                "peak_memory_mib": None, "compile_speedup": 1.5, "compiled_output_deviation": 0.1,
                "compiled_outputs_match": match}  # fmt: skip

    row = {
        "case": "inference",
        "batch": 1,
        "unit": "queries",
        "throughput_ratio": 1.0,
        "flop_efficiency_ratio": 1.0,
    }
    (printed,) = load_script("benchmark_speed").printed_rows(
        [{**row, "sgdetr": model(False), "reference": model(True)}]
    )
    assert printed["SG-DETR"].endswith("1.50x eager, COMPILED OUTPUTS OFF BY 0.1")
    assert printed["reference"].endswith("1.50x eager")


def test_benchmark_speed_compares_each_compiled_model_with_the_eager_one(monkeypatch, capsys, tmp_path):
    """The deviation and the flag come from the two models' own outputs: a stand-in for ``torch.compile`` that
    returns SG-DETR with its outputs nudged by 1% (and the reference as it is) gets SG-DETR flagged, not the
    reference (no real compilation: it would take minutes here)."""
    from torch.utils._pytree import tree_map

    from sgdetr_hf import SGDetrForMomentRetrieval

    def nudged(model, mode=None):
        if not isinstance(model, SGDetrForMomentRetrieval):
            return model
        nudge = lambda x: x * 1.01 if isinstance(x, torch.Tensor) and x.is_floating_point() else x  # noqa: E731
        return lambda *inputs: tree_map(nudge, model(*inputs))

    monkeypatch.setattr(torch, "compile", nudged)
    path = tmp_path / "speed.json"
    args = ["--threads", "1", "--batch-size", "2", "--clips", "8", "--tokens", "4", "--dim", "16"]
    args += ["--rounds", "1", "--no-memory", "--system-malloc", "--compile", "--cases", "inference"]
    assert _run_main(monkeypatch, "benchmark_speed", *args, "--json", str(path)) == 0
    for row in json.loads(path.read_text())["rows"]:
        sgdetr, reference = row["sgdetr"], row["reference"]
        assert sgdetr["compiled_output_deviation"] == pytest.approx(0.01, rel=1e-3)
        assert sgdetr["compiled_outputs_match"] is False
        assert reference["compiled_output_deviation"] == 0.0 and reference["compiled_outputs_match"] is True
    printed = _table(capsys.readouterr().out)
    assert all("COMPILED OUTPUTS OFF BY 0.01" in row["SG-DETR"] for row in printed)
    assert not any("COMPILED" in row["reference"] for row in printed)
