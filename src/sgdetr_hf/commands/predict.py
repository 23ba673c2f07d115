"""``sgdetr predict``: the moments of a video that match text queries, as a table, JSON and a timeline PNG.

    sgdetr predict video.mp4 "a man rides a bike" "a dog runs" --model DIR_OR_ID --plot timeline.png
    sgdetr predict features.safetensors "a man rides a bike" --json moments.json

``VIDEO`` is a video file (decoded and encoded once by the model's InternVideo2 encoder) or a
``.safetensors`` file of pre-extracted clip features (key ``video_features``, and ``clip_timestamps`` for the
video's duration, as written by ``sgdetr extract-features``). The table lists, per query, the best windows in
seconds and their scores; ``--json`` writes the pipeline's output and ``--plot`` draws each query's saliency
curve with the top windows shaded (and ``--ground-truth`` windows, when given).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..files import atomic_write_json, unwritable_reason
from ..hub_ids import DEFAULT_MODEL_REPO, HOW_TO_GET_A_MODEL

logger = logging.getLogger(__name__)

PLOTTED_WINDOWS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="video file, or .safetensors file of clip features")
    parser.add_argument("queries", nargs="+", help="one or more text queries")
    parser.add_argument(
        "--model", default=DEFAULT_MODEL_REPO, help=f"model folder or Hub id (default: {DEFAULT_MODEL_REPO})"
    )
    parser.add_argument(
        "--encoder", help="InternVideo2 encoder folder or Hub id (default: the model's encoder/)"
    )
    parser.add_argument("--top-k", type=int, default=5, help="windows per query (default: 5)")
    parser.add_argument(
        "--window-overlap",
        type=float,
        default=1 / 3,
        help="overlap of consecutive windows on videos longer than the training length (default: 1/3)",
    )
    parser.add_argument(
        "--device", default=None, help="torch device, e.g. cuda:0 (default: GPU if available)"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the predictions as JSON")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="write the timeline plot (PNG)")
    parser.add_argument(
        "--ground-truth",
        nargs=2,
        type=float,
        action="append",
        metavar=("START", "END"),
        help="a true window in seconds, drawn on the plot of every query (repeatable)",
    )


def load_video_input(path: Path, clip_length: float | None = None) -> str | dict[str, Any]:
    """The pipeline input for ``path``: the video path, or the features of a ``.safetensors`` file (with the
    video's duration, the end of its last clip, where the file has ``clip_timestamps``). Features cut into clips
    of another length than ``clip_length`` (the model's) are refused: every second of the answer would be
    off by their ratio."""
    if not path.is_file():
        raise ValueError(f"{path} is not a file: give a video file or a .safetensors file of clip features")
    if path.suffix != ".safetensors":
        return str(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error})") from None
    if "video_features" not in tensors:
        raise ValueError(
            f"{path} holds {sorted(tensors)}, not 'video_features' (L, d): use extract-features output"
        )
    video = {"video_features": tensors["video_features"]}
    if "clip_timestamps" in tensors:  # extract-features keeps the video's end: the last clip may be partial
        timestamps = tensors["clip_timestamps"].double()
        video["duration"] = float(timestamps[-1, 1])
        lengths = (timestamps[:-1, 1] - timestamps[:-1, 0]).unique()  # every clip but the last is whole
        if clip_length is not None and len(lengths) and (lengths - clip_length).abs().max() > 1e-6:
            raise ValueError(
                f"{path} holds features of {float(lengths[0]):g}-s clips, but the model takes {clip_length:g}-s "
                f"clips: extract them again with --clip-length {clip_length:g}"
            )
    return video


def warn_fewer_windows(results: list[dict[str, Any]], top_k: int) -> None:
    """Say why a query got fewer windows than ``--top-k`` asked for, rather than cut the list silently."""
    for result in results:
        found = len(result["pred_relevant_windows"])
        if found < top_k:
            logger.warning(
                'query "%s": %d window(s), not the %d asked for (--top-k): only %d distinct candidate '
                "window(s) remain after duplicate removal (1-D NMS) and span fusion on this %.1f-s video "
                "(%d clips of %.0f s); a short video has few distinct windows",
                result["query"],
                found,
                top_k,
                found,
                result["duration"],
                len(result["pred_saliency_scores"]),
                result["clip_length"],
            )


def format_table(results: list[dict[str, Any]]) -> str:
    """One block per query: rank, start, end (seconds) and score of each window."""
    lines = []
    for result in results:
        lines += [
            f'query: "{result["query"]}"',
            f"  {'rank':>4}  {'start (s)':>10}  {'end (s)':>10}  {'score':>7}",
        ]
        lines += [
            f"  {rank:>4}  {start:>10.2f}  {end:>10.2f}  {score:>7.4f}"
            for rank, (start, end, score) in enumerate(result["pred_relevant_windows"], start=1)
        ]
        if not result["pred_relevant_windows"]:
            lines.append("  (no window)")
    return "\n".join(lines)


def load_retriever(args: argparse.Namespace):
    """The pipeline of ``--model`` / ``--encoder``. A model that cannot be loaded (the placeholder default id,
    offline, a missing folder) or that has no encoder is a ``ValueError`` saying how to get a usable one."""
    from transformers import pipeline

    from ..pipeline_sgdetr import ENCODER_SUBFOLDER, VideoMomentRetrievalPipeline

    try:
        retriever = pipeline(
            "video-moment-retrieval",
            model=args.model,
            pipeline_class=VideoMomentRetrievalPipeline,
            encoder=args.encoder,
            device=args.device,
        )
    except OSError as error:  # not a folder, not on the Hub, or offline
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load the model {args.model!r} ({reason}); {HOW_TO_GET_A_MODEL}") from None
    if retriever.encoder is None:
        raise ValueError(
            f"{args.model} has no InternVideo2 encoder (no {ENCODER_SUBFOLDER}/ folder), which predict needs to "
            "encode the queries: pass --encoder DIR (a folder written by `sgdetr convert-internvideo2`); models "
            "trained on pre-extracted features (./run demo, sgdetr train) have none"
        )
    return retriever


def output_file_problem(path: Path | None, option: str) -> str | None:
    """Why ``path`` cannot be written as a file, or ``None``: checked before the work, so that a typo does not
    lose the predictions at the end."""
    reason = None if path is None else unwritable_reason(path)
    if reason is None:
        return None
    example = path / ("moments.json" if option == "--json" else "timeline.png")
    hint = f"; give a file path, e.g. {example}" if reason.startswith("it is a folder") else ""
    return f"{option} {path}: {reason}{hint}"


def run(args: argparse.Namespace) -> int:
    truth = [list(window) for window in args.ground_truth or []]
    problem = None
    if args.top_k < 1:
        problem = f"--top-k must be >= 1, got {args.top_k}"
    elif any(not 0 <= start < end for start, end in truth):
        problem = f"every --ground-truth window needs 0 <= START < END seconds, got {truth}"
    else:
        problem = output_file_problem(args.json, "--json") or output_file_problem(args.plot, "--plot")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from ..loading_sgdetr import CheckpointError

    try:
        retriever = load_retriever(args)
        video = load_video_input(args.video, retriever.model.config.clip_length)
        results = retriever(
            video, queries=list(args.queries), top_k=args.top_k, window_overlap=args.window_overlap
        )
    # bad input, unreadable video, model not found, a model or encoder folder that cannot give the model
    except (ValueError, OSError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    warn_fewer_windows(results, args.top_k)
    print(format_table(results))
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path is None:
            continue
        try:
            write_output(option, path, results, truth, args.top_k)
        except OSError as error:  # checked above, but the disk can still refuse (permissions, space)
            reason = error.strerror or str(error)
            print(f"error: cannot write {option} {path} ({reason})", file=sys.stderr)
            return 2
        logger.info("wrote %s", path)
    return 0


def write_output(option: str, path: Path, results: list[dict[str, Any]], truth: list, top_k: int) -> None:
    """Write ``results`` as JSON (``--json``) or the timeline PNG (``--plot``) to ``path``, atomically."""
    if option == "--json":
        atomic_write_json(path, results)
        return
    from ..visualization import plot_timeline

    plot_timeline(
        [{**result, "relevant_windows": truth} for result in results],
        path,
        clip_length=results[0]["clip_length"],
        top_k=min(PLOTTED_WINDOWS, top_k),
    )
