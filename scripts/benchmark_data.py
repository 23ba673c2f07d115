"""Data pipeline throughput: building a dataset (rows/s) and loading + collating batches (batches/s).

Random float16 features in the QVHighlights shape (L=75 clips, N=32 tokens, d=512) with toy annotations.

    python scripts/benchmark_data.py                      # build rows/s + load/collate batches/s
    python scripts/benchmark_data.py layout --videos 10000   # feature layout: query rows vs per-video config
    python scripts/benchmark_data.py npz --videos 10000      # building from a published .npz release

``layout`` runs each layout in a fresh subprocess (clean peak RSS, cold ``datasets`` cache) and prints
disk size, write time, first ``load_dataset`` time and batches/s of random batches of 32.

``npz`` writes a synthetic release in the QVHighlights ``moment_detr_features`` layout (``clip_features``
(75, 512) and ``slowfast_features`` (75 or 76, 2304) float16 per video, ``clip_text_features/qid*.npz``
float32 tokens + pooled vector per query), then builds it with ``build_benchmark_dataset``'s
``NpzFeatures`` in a fresh subprocess and prints videos/s, MB/s of .npz read, the build's peak RSS and
the Parquet size. 10k videos need ~4.4 GB for the release and as much for the dataset in ``--workdir``
(default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import datasets
import numpy as np
import torch

from sgdetr_hf.benchmarking import measure, peak_rss_mib, print_table
from sgdetr_hf.data import MomentRetrievalCollator, ToyGroundingTask, ToyTaskConfig
from sgdetr_hf.data.builder import ArrayFeatures, build_dataset, write_parquet_shard
from sgdetr_hf.data.dataset import load_moment_retrieval, rows_from_arrow
from sgdetr_hf.data.npz_features import NpzFeatures, save_npz
from sgdetr_hf.data.schema import ANNOTATION_COLUMNS, annotation_features
from sgdetr_hf.files import strict_json


class RandomFeatures(ArrayFeatures):
    """Lazily generated random (L, d) / (N, d) float16 features, seeded by the id: no RAM for 10k videos."""

    def __init__(self, num_clips: int, num_tokens: int, dim: int):
        super().__init__({}, {})
        self.num_clips, self.num_tokens, self.dim = num_clips, num_tokens, dim

    @staticmethod
    def _matrix(key: str, rows: int, dim: int) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        return rng.standard_normal((rows, dim), dtype=np.float32).astype(np.float16)

    def video_shape(self, vid):
        return (self.num_clips, self.dim)

    def text_shape(self, qid):
        return (self.num_tokens, self.dim)

    def video(self, vid):
        return self._matrix(vid, self.num_clips, self.dim)

    def text(self, qid):
        return self._matrix("q" + qid, self.num_tokens, self.dim)


def annotation_rows(num_videos: int, queries_per_video: float) -> list[dict]:
    """Toy annotations (no features) for ``num_videos`` 150-s videos, ``queries_per_video`` on average."""
    task = ToyGroundingTask(ToyTaskConfig(min_clips=75, max_clips=75, video_dim=8, text_dim=8))
    num_queries = round(num_videos * queries_per_video)
    rows = []
    for index in range(num_queries):
        row = {k: v for k, v in task.sample(index % 997).items() if k in ANNOTATION_COLUMNS}
        row.update(qid=str(index), vid=f"video{index % num_videos:06d}_0.0_150.0")
        rows.append(row)
    return rows


def directory_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def time_batches(dataset, num_batches: int, batch_size: int, max_clips: int | None = 75) -> float:
    """Batches/s of random batches fetched with ``__getitems__`` and collated."""
    collator = MomentRetrievalCollator(max_clips=max_clips)
    rng = np.random.default_rng(0)
    fetch = dataset.__getitems__ if hasattr(dataset, "__getitems__") else dataset.__getitem__
    timing = measure(
        lambda: collator(fetch(rng.choice(len(dataset), batch_size, replace=False).tolist())),
        repeats=num_batches,
        warmup=1,
    )
    assert timing.result["video_features"].shape == (batch_size, 75, 512)
    return num_batches / timing.total


class _RowsLayout(torch.utils.data.Dataset):
    """Layout A: every query row carries its video's features (duplicated per query)."""

    def __init__(self, table: datasets.Dataset):
        self.table = table.with_format("arrow")

    def __len__(self):
        return len(self.table)

    def __getitems__(self, indices):
        return rows_from_arrow(self.table[indices])


def run_layout(
    layout: str, num_videos: int, queries_per_video: float, workdir: Path, num_batches: int
) -> dict:
    rows = annotation_rows(num_videos, queries_per_video)
    source = RandomFeatures(75, 32, 512)
    folder, cache = workdir / layout, workdir / f"{layout}-cache"

    def write() -> None:
        if layout == "join":
            build_dataset(folder, "bench", {"train": rows}, source, max_shard_bytes=256 * 2**20)
            return
        features = annotation_features(512)
        features["video_features"] = datasets.Array2D(shape=(None, 512), dtype="float16")
        shards = np.array_split(np.arange(len(rows)), max(1, round(len(rows) * 75 * 512 * 2 / 2**28)))
        for index, part in enumerate(shards):
            columns = {c: [rows[i][c] for i in part] for c in ANNOTATION_COLUMNS}
            columns["text_features"] = [source.text(rows[i]["qid"]) for i in part]
            columns["video_features"] = [source.video(rows[i]["vid"]) for i in part]
            write_parquet_shard(folder / f"train-{index:05d}-of-{len(shards):05d}.parquet", columns, features)

    def load() -> torch.utils.data.Dataset:
        if layout == "join":
            return load_moment_retrieval(folder, "bench", "train", cache_dir=str(cache))
        return _RowsLayout(
            datasets.load_dataset("parquet", data_dir=str(folder), split="train", cache_dir=str(cache))
        )

    written = measure(write)
    loaded = measure(load)  # the first load: it builds the Arrow cache
    return {
        "layout": layout,
        "queries": len(rows),
        "videos": num_videos,
        "parquet_mib": round(directory_mib(folder), 1),
        "arrow_cache_mib": round(directory_mib(cache), 1),
        "write_s": round(written.best, 1),
        "first_load_s": round(loaded.best, 1),
        "batches_per_s": round(time_batches(loaded.result, num_batches, 32), 1),
        "peak_rss_mib": round(peak_rss_mib()),
    }


def benchmark_pipeline(num_videos: int, num_batches: int) -> None:
    rows = annotation_rows(num_videos, 1.0)
    with tempfile.TemporaryDirectory() as workdir:
        built = measure(
            lambda: build_dataset(Path(workdir) / "ds", "bench", {"train": rows}, RandomFeatures(75, 32, 512))
        )
        dataset = load_moment_retrieval(Path(workdir) / "ds", "bench", "train", cache_dir=f"{workdir}/cache")
        batch_rate = time_batches(dataset, num_batches, 32)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=32,
            shuffle=True,
            collate_fn=MomentRetrievalCollator(max_clips=75),
            drop_last=True,
        )
        iterated = measure(lambda: sum(1 for _ in zip(range(num_batches), loader)))
    measures = {
        "build (annotations + features -> Parquet + card), rows/s": f"{len(rows) / built.best:.0f}",
        "fetch + collate, batch 32, batches/s": f"{batch_rate:.1f}",
        "DataLoader (shuffle, 0 workers), batch 32, batches/s": f"{iterated.result / iterated.best:.1f}",
        "peak RSS, MiB": f"{peak_rss_mib():.0f}",
    }
    print_table([{"measure": name, "value": value} for name, value in measures.items()])


NPZ_VIDEO_TYPES = {"clip_features": 512, "slowfast_features": 2304}


def write_npz_release(root: Path, rows: list[dict]) -> None:
    """Random features for ``rows`` in the moment_detr_features layout; SlowFast one clip longer for every
    third video, as in the release."""
    rng = np.random.default_rng(0)
    for index, vid in enumerate(dict.fromkeys(row["vid"] for row in rows)):
        for folder, dim in NPZ_VIDEO_TYPES.items():
            clips = 75 + (folder == "slowfast_features" and index % 3 == 0)
            save_npz(
                root / folder / f"{vid}.npz",
                features=rng.standard_normal((clips, dim), np.float32).astype(np.float16),
            )
    for row in rows:
        tokens = rng.standard_normal((int(rng.integers(8, 24)), 512), np.float32)
        save_npz(root / "clip_text_features" / f"qid{row['qid']}.npz", last_hidden_state=tokens,
                 pooler_output=rng.standard_normal(512, np.float32))  # fmt: skip


def run_npz_build(num_videos: int, queries_per_video: float, workdir: Path) -> dict:
    """Build the release in ``workdir/release`` (this process: its peak RSS is the build's)."""
    rows = annotation_rows(num_videos, queries_per_video)
    release = workdir / "release"
    source = NpzFeatures(release, list(NPZ_VIDEO_TYPES), "clip_text_features")
    built = measure(lambda: build_dataset(workdir / "dataset", "bench", {"train": rows}, source))
    input_mib = directory_mib(release)
    return {
        "videos": num_videos,
        "queries": len(rows),
        "release_mib": round(input_mib, 1),
        "build_s": round(built.best, 1),
        "videos_per_s": round(num_videos / built.best, 1),
        "release_mb_per_s": round(input_mib * 2**20 / 1e6 / built.best, 1),
        "parquet_mib": round(directory_mib(workdir / "dataset"), 1),
        "truncated_videos": built.result.feature_source["truncated_videos"],
        "peak_rss_mib": round(peak_rss_mib()),
    }


def benchmark_npz(num_videos: int, queries_per_video: float, workdir: str | None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        generated = measure(
            lambda: write_npz_release(
                Path(folder) / "release", annotation_rows(num_videos, queries_per_video)
            )
        )
        command = [sys.executable, __file__, "_one-npz", "--workdir", folder, "--videos", str(num_videos),
                   "--queries-per-video", str(queries_per_video)]  # fmt: skip
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["release_write_s"] = round(generated.best, 1)
    print_table([result])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "mode",
        nargs="?",
        default="pipeline",
        choices=["pipeline", "layout", "_one-layout", "npz", "_one-npz"],
    )
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--queries-per-video", type=float, default=1.8)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--layout", default="join", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help="npz: folder for the release and the dataset")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    if args.mode == "pipeline":
        benchmark_pipeline(args.videos, args.batches)
    elif args.mode == "npz":
        benchmark_npz(args.videos, args.queries_per_video, args.workdir)
    elif args.mode == "_one-npz":
        print(strict_json(run_npz_build(args.videos, args.queries_per_video, Path(args.workdir))))
    elif args.mode == "_one-layout":
        result = run_layout(
            args.layout, args.videos, args.queries_per_video, Path(args.workdir), args.batches
        )
        print(strict_json(result))
    else:
        results = []
        with tempfile.TemporaryDirectory() as workdir:
            for layout in ("rows", "join"):
                command = [sys.executable, __file__, "_one-layout", "--layout", layout, "--workdir", workdir]
                command += ["--videos", str(args.videos), "--queries-per-video", str(args.queries_per_video)]
                command += ["--batches", str(args.batches)]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                results.append(json.loads(output.strip().splitlines()[-1]))
        print_table(results)


if __name__ == "__main__":
    main()
