"""The benchmark scripts' shared helper: the timed calls, peak memory, the Markdown table and the JSON file."""

import collections
import json
import math
import time

import pytest
import torch

from sgdetr_hf.benchmarking import (
    QVHIGHLIGHTS_WINDOW_COUNTS,
    Measurement,
    count_ops_and_flops,
    kernel_time_split,
    largest_deviation,
    malloc_setting,
    measure,
    measure_interleaved,
    peak_rss_mib,
    print_table,
    random_labels,
    write_json,
)


def test_measure_runs_the_warmup_untimed_then_times_each_repeat():
    calls = []

    def sleep_longer_each_call() -> int:
        calls.append(len(calls))
        time.sleep(0.01 * len(calls))  # 10, 20, ... 70 ms
        return len(calls)

    timing = measure(sleep_longer_each_call, repeats=5, warmup=2)
    assert len(calls) == 7 and timing.result == 7
    assert len(timing.seconds) == len(timing.cpu_seconds) == 5
    # the timed calls are the 3rd to 7th: 30 to 70 ms of sleep (and a little more on a busy machine)
    assert all(0.01 * n <= s < 0.01 * n + 0.5 for n, s in zip(range(3, 8), timing.seconds))
    assert timing.best == min(timing.seconds) <= timing.median <= max(timing.seconds)
    assert timing.total == pytest.approx(sum(timing.seconds))
    assert sum(timing.cpu_seconds) < 0.5 * timing.total  # sleeping costs no CPU time
    assert timing.peak_memory_mib == pytest.approx(peak_rss_mib(), abs=1.0)  # off CUDA: the process RSS


def test_measure_counts_cpu_time_and_rejects_bad_counts():
    def spin() -> None:
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass

    timing = measure(spin, repeats=2)
    assert all(c >= 0.02 for c in timing.cpu_seconds)
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure(spin, repeats=0)
    with pytest.raises(ValueError, match="warmup >= 0"):
        measure(spin, warmup=-1)


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    timing = Measurement(seconds=(4.0, 1.0, 3.0, 2.0), cpu_seconds=(0.0,) * 4, peak_memory_mib=0.0)
    assert (timing.best, timing.median, timing.total) == (1.0, 2.5, 10.0)


def test_peak_rss_is_the_kernel_high_water_mark():
    with open("/proc/self/status") as status:
        high_water_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    assert peak_rss_mib() == pytest.approx(high_water_kib / 1024, abs=1.0)
    assert peak_rss_mib(include_children=True) >= peak_rss_mib()


def test_print_table_is_markdown_with_the_first_row_keys_as_columns(capsys):
    print_table([{"case": "a", "seconds": "1.50"}, {"case": "b"}])
    assert capsys.readouterr().out == "| case | seconds |\n| --- | --- |\n| a | 1.50 |\n| b |  |\n"
    with pytest.raises(ValueError, match="at least one row"):
        print_table([])


def test_write_json_is_strict_and_atomic(tmp_path):
    path = write_json(tmp_path / "out" / "rows.json", [{"mode": "inference", "ms": 1.25}])
    assert json.loads(path.read_text()) == [{"mode": "inference", "ms": 1.25}]
    assert path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(ValueError, match="Out of range float"):
        write_json(tmp_path / "nan.json", {"ms": math.nan})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # neither a file nor a temporary left


def test_measure_interleaved_alternates_the_functions_round_by_round():
    calls = []
    timed = measure_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1
    )
    assert calls == ["a", "b"] * 4
    assert set(timed) == {"a", "b"} and all(len(m.seconds) == 3 for m in timed.values())


def test_count_ops_and_flops_counts_kernels_and_matmul_arithmetic():
    a, b, c = torch.randn(4, 3), torch.randn(3, 5), torch.randn(4, 5)
    ops, flops = count_ops_and_flops(lambda: torch.addmm(c, a, b))
    assert (ops, flops) == (1, 2 * 4 * 3 * 5)
    ops, flops = count_ops_and_flops(lambda: c.clone().addmm_(a, b).relu())  # in place: the same arithmetic
    assert (ops, flops) == (3, 2 * 4 * 3 * 5)
    conv = torch.nn.Conv1d(2, 6, 3, padding=1)
    _, flops = count_ops_and_flops(lambda: conv(torch.randn(1, 2, 10)))
    assert flops == 2 * 10 * 6 * 2 * 3


def test_count_ops_and_flops_counts_the_attention_of_sdpa_on_cpu():
    # torch.utils.flop_counter has no formula for SDPA's CPU kernels: without ours they count 0 FLOPs
    batch, heads, lq, lk, d = 2, 4, 6, 10, 8
    q = torch.randn(batch, heads, lq, d, requires_grad=True)
    k, v = torch.randn(batch, heads, lk, d), torch.randn(batch, heads, lk, d)
    product = 2 * batch * heads * lq * lk * d  # one of the attention's matrix products
    _, forward = count_ops_and_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    _, eager = count_ops_and_flops(lambda: torch.softmax(q @ k.transpose(-1, -2) * d**-0.5, -1) @ v)
    assert forward == eager == 2 * product  # q k^T and the weighted sum of v
    _, both = count_ops_and_flops(
        lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    )
    assert both == forward + 5 * product  # the backward: q k^T again, then dV, dP, dQ and dK


def test_kernel_time_split_separates_matrix_kernels_from_the_rest():
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    x = torch.randn(1_000_000)

    def matmul_then_elementwise():
        product = a @ b
        for _ in range(20):
            x.mul(1.5)
        return product

    split = kernel_time_split(matmul_then_elementwise, calls=2, top=3)
    names = {name: count for name, _, count in split["top_ops"]}
    assert len(split["top_ops"]) == 3 and names["aten::mul"] == 20
    assert 0 < split["matrix_ms"] < split["total_ms"]
    matrix_only = kernel_time_split(
        lambda: torch.zeros(256, 256).addmm_(a, b)
    )  # in place: a matrix kernel too
    assert matrix_only["matrix_ms"] / matrix_only["total_ms"] > split["matrix_ms"] / split["total_ms"]
    with pytest.raises(ValueError, match="calls >= 1"):
        kernel_time_split(matmul_then_elementwise, calls=0)


def test_a_subprocess_reports_its_own_peak_not_its_parents():
    """Linux keeps ru_maxrss across fork + exec: a small benchmark subprocess of a large parent would report
    the parent's peak. peak_rss_mib reads the process's own high-water mark."""
    import subprocess
    import sys

    ballast = bytearray(600 * 2**20)  # the parent holds 600 MiB
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched: resident
    child = subprocess.run(
        [sys.executable, "-c", "from sgdetr_hf.benchmarking import peak_rss_mib; print(peak_rss_mib())"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert peak_rss_mib() > 600
    assert float(child.stdout.split()[-1]) < 400
    del ballast


@pytest.mark.parametrize(
    ("system_malloc", "device", "applied"),
    [(False, "cpu", True), (True, "cpu", False), (False, "cuda", False)],
)
def test_malloc_setting_applies_to_cpu_runs_unless_switched_off(monkeypatch, system_malloc, device, applied):
    calls = []
    monkeypatch.setattr("sgdetr_hf.benchmarking.retain_freed_memory", lambda: calls.append(1) or True)
    expected = "malloc retains freed memory" if applied else "system malloc"
    assert malloc_setting(system_malloc, device) == expected
    assert calls == ([1] if applied else [])


def test_qvhighlights_window_counts_are_those_of_its_training_split(shared_data):
    with open(shared_data / "qvhighlights" / "highlight_train_release.jsonl") as f:
        counts = collections.Counter(len(json.loads(line)["relevant_windows"]) for line in f)
    assert tuple(counts[k] for k in range(1, max(counts) + 1)) == QVHIGHLIGHTS_WINDOW_COUNTS


def test_random_labels_draw_windows_per_sample_from_the_chosen_distribution():
    def window_counts(windows):
        return torch.tensor(
            [len(label["spans"]) for label in random_labels(4000, 75, "cpu", windows=windows, max_windows=5)]
        )

    uniform, qvh = window_counts("1-3"), window_counts("qvhighlights")
    assert set(uniform.tolist()) == {1, 2, 3}
    assert uniform.float().mean() == pytest.approx(2.0, abs=0.05)
    # QVHighlights: 67% of queries have one window, 5.6% five or more, which training caps at five
    assert (qvh == 1).float().mean() == pytest.approx(4855 / 7218, abs=0.02)
    assert (qvh == 5).float().mean() == pytest.approx(sum(QVHIGHLIGHTS_WINDOW_COUNTS[4:]) / 7218, abs=0.01)
    assert qvh.min() == 1 and qvh.max() == 5
    with pytest.raises(ValueError, match="windows must be one of"):
        random_labels(1, 75, "cpu", windows="many")


def test_largest_deviation_is_relative_to_each_tensor_and_walks_model_outputs():
    from transformers.modeling_outputs import BaseModelOutput

    base = torch.tensor([2.0, -1.0, float("nan"), float("-inf")])
    assert largest_deviation(base, base.clone()) == 0.0  # NaN and -inf where the other has them
    nudged = base.clone()
    nudged[1] += 0.1
    assert largest_deviation(base, nudged) == pytest.approx(0.05)  # 0.1 of the largest finite value, 2
    assert largest_deviation(base, torch.tensor([2.0, -1.0, 0.0, float("-inf")])) == math.inf
    small, large = torch.tensor([0.01]), torch.tensor([100.0])
    expected = BaseModelOutput(last_hidden_state=small, hidden_states=(large, torch.tensor([1, 2])))
    actual = BaseModelOutput(
        last_hidden_state=small + 0.001, hidden_states=(large + 1.0, torch.tensor([1, 2]))
    )
    assert largest_deviation(expected, actual) == pytest.approx(0.1)  # 0.001 of 0.01 outweighs 1 of 100
    assert (
        largest_deviation([torch.tensor([1, 2])], [torch.tensor([1, 3])]) == math.inf
    )  # integers must be equal
    with pytest.raises(ValueError, match="differ in structure"):
        largest_deviation(expected, BaseModelOutput(last_hidden_state=small))
    with pytest.raises(ValueError, match="differ in structure"):
        largest_deviation(torch.zeros(2), torch.zeros(3))
