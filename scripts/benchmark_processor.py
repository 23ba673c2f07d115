"""Benchmark video decoding + preprocessing (x real-time) and the InternVideo2 encoder (clips/s).

    python scripts/benchmark_processor.py [--video cached.mp4] [--duration 150]

Generates a 720p H.264 video (25 fps, x264 defaults: B-frames, a keyframe every 250 frames) unless one is
given, then runs each case in a fresh process so that its peak RSS is its own:

* ``pyav-plain``: a plain sequential PyAV decode that converts exactly the frames the processor samples
  to RGB (the floor for any decoder-based approach);
* ``processor-pyav`` / ``processor-decord``: ``SGDetrVideoProcessor.iter_clips`` over the whole video
  (decode, resize to 224 x 224, normalise), with decord in its crash-isolating child process;
* ``decord-in-process``: the decord backend without isolation (what the isolation costs);
* ``encoder-tiny``: the tiny InternVideo2 config on CPU (clips/s, batches of 32 clips);
* ``encoder-1b``: the 1B config in bf16, only when a CUDA GPU is present.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from sgdetr_hf.benchmarking import measure, peak_rss_mib, print_table
from sgdetr_hf.files import strict_json


def generate_video(path: Path, duration: float, fps: int = 25, size: tuple[int, int] = (1280, 720)) -> Path:
    """Smooth panning gradients, a moving block and mild noise at x264 defaults (CRF 23, B-frames, a keyframe
    every 250 frames): about the bitrate of a 720p web video."""
    import av

    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, columns = np.mgrid[0:height, 0 : width * 2]
    base = np.stack([(columns // 5) % 256, (rows // 3) % 256, ((rows + columns) // 7) % 256], axis=-1).astype(
        np.uint8
    )
    noise = np.random.default_rng(0).integers(0, 6, (8, height, width, 1), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(int(duration * fps)):
            shift = (index * 3) % width
            image = base[:, shift : shift + width] + noise[index % 8]
            top, left = (index * 2) % (height - 120), (index * 5) % (width - 160)
            image[top : top + 120, left : left + 160] = (255 - index) % 256
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def plain_pyav(path: str) -> dict:
    """Sequential decode; only the frames the processor samples are converted to RGB."""
    import av

    from sgdetr_hf import SGDetrVideoProcessor
    from sgdetr_hf.video_io_sgdetr import PyAVDecoder

    with PyAVDecoder(path) as decoder:
        wanted = set(SGDetrVideoProcessor().plan_clips(decoder.metadata).frame_indices.ravel().tolist())

    def decode() -> int:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            return sum(
                frame.to_ndarray(format="rgb24").size > 0
                for index, frame in enumerate(container.decode(stream))
                if index in wanted
            )

    decoding = measure(decode)
    return {"seconds": decoding.best, "frames": decoding.result}


def processor_case(path: str, backend: str, isolate: bool | None = None) -> dict:
    from sgdetr_hf import SGDetrVideoProcessor
    from sgdetr_hf import video_processing_sgdetr as module

    if isolate is not None:  # the decoder choice is internal: route open_video through the requested variant
        original = module.open_video
        module.open_video = lambda *args, **kwargs: original(*args, **{**kwargs, "isolate": isolate})
    processor = SGDetrVideoProcessor(backend=backend)
    decoding = measure(lambda: sum(len(chunk["pixel_values"]) for chunk in processor.iter_clips(path)))
    return {"seconds": decoding.best, "clips": decoding.result}


def encoder_case(config_name: str) -> dict:
    import torch

    from sgdetr_hf import InternVideo2Config, InternVideo2Model

    if config_name == "tiny":  # the test suite's tiny encoder
        vision = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=279)
        vision |= dict(image_size=16, patch_size=4, pooler_num_attention_heads=4, pooler_output_size=32)
        text = dict(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
        )
        config = InternVideo2Config(vision_config=vision, text_config=text, projection_dim=16)
        device, dtype, batch, repeats = "cpu", torch.float32, 32, 20
    else:
        config, device, dtype, batch, repeats = InternVideo2Config(), "cuda", torch.bfloat16, 32, 5
    with torch.device(device):  # random weights (speed only), initialised where they will run
        model = InternVideo2Model(config).to(dtype).eval()
    size = config.vision_config.image_size
    pixel_values = torch.randn(
        batch, config.vision_config.num_frames, 3, size, size, device=device, dtype=dtype
    )
    with torch.inference_mode():
        encoding = measure(lambda: model.get_video_features(pixel_values), repeats, warmup=1, device=device)
    result = {"seconds": encoding.total, "clips_per_second": batch * repeats / encoding.total, "batch": batch}
    if device == "cuda":
        result["gpu_peak_mb"] = encoding.peak_memory_mib
    return result


CASES = {
    "pyav-plain": lambda video: plain_pyav(video),
    "processor-pyav": lambda video: processor_case(video, "pyav"),
    "processor-decord": lambda video: processor_case(video, "decord"),
    "decord-in-process": lambda video: processor_case(video, "decord", isolate=False),
    "encoder-tiny": lambda video: encoder_case("tiny"),
    "encoder-1b": lambda video: encoder_case("1b"),
}


def run_case(name: str, video: Path, torch_threads: int) -> dict:
    """One case in a fresh interpreter (its own peak RSS); returns its JSON line."""
    command = [
        sys.executable,
        __file__,
        "--case",
        name,
        "--video",
        str(video),
        "--torch-threads",
        str(torch_threads),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", help="use (or create, if missing) this video file")
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of generated video")
    parser.add_argument("--repeats", type=int, default=2, help="runs per decoding case (the best is kept)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (resize, encoder). On a shared 2-core machine 2 threads spin against the "
        "other jobs and ran up to 20x slower than 1; FFmpeg's decoding threads are not affected",
    )
    parser.add_argument(
        "--case", choices=sorted(CASES), help=argparse.SUPPRESS
    )  # internal: one case per process
    args = parser.parse_args()

    import torch

    if args.case:
        torch.set_num_threads(args.torch_threads)
        # include_children: decord's crash-isolating decoding process is part of the case
        print(
            strict_json({**CASES[args.case](args.video), "peak_rss_mb": peak_rss_mib(include_children=True)})
        )
        return

    video = Path(args.video) if args.video else Path(tempfile.mkdtemp()) / "benchmark_720p.mp4"
    if not video.exists():
        print(f"generating {args.duration:.0f} s of 720p H.264 in {video} ...", flush=True)
        generate_video(video, args.duration)
    from sgdetr_hf.video_io_sgdetr import PyAVDecoder

    with PyAVDecoder(video) as decoder:
        duration = decoder.metadata.duration
    cores = len(os.sched_getaffinity(0))
    print(f"video: {video} ({duration:.1f} s); cores: {cores}; torch threads: {args.torch_threads}")
    rows = []
    for name in CASES:
        if name == "encoder-1b" and not torch.cuda.is_available():
            rows.append({"case": name, "seconds": "not measured (no CUDA GPU here)"})
            continue
        repeats = 1 if name.startswith("encoder") else args.repeats
        best = min(
            (run_case(name, video, args.torch_threads) for _ in range(repeats)),
            key=lambda run: run["seconds"],
        )
        rows.append(
            {
                "case": name,
                "seconds": f"{best['seconds']:.2f}",
                "x real-time": "" if name.startswith("encoder") else f"{duration / best['seconds']:.1f}",
                "clips/s": f"{best['clips_per_second']:.0f}" if "clips_per_second" in best else "",
                "peak RSS MB": f"{best['peak_rss_mb']:.0f}",
            }
        )
    print_table(rows)


if __name__ == "__main__":
    main()
