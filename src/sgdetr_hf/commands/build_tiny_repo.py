"""``sgdetr build-tiny-repo OUTPUT``: a complete tiny SG-DETR repository with RANDOM weights, for integration tests.

    sgdetr build-tiny-repo tiny-sgdetr
    sgdetr predict video.mp4 "a man rides a bike" --model tiny-sgdetr --json moments.json

The folder (about 1.5 MB, built in under a second once the package is imported) is in the release's exact format: SG-DETR with its remote
code and ``custom_pipelines``, and an InternVideo2 encoder with its processor under ``encoder/``, so
``pipeline(model=OUTPUT, trust_remote_code=True)``, ``sgdetr predict``, the endpoint handler and the Space run
on it from a video file. Its moments are meaningless: use it to test a path end to end, never a result
(see :mod:`sgdetr_hf.tiny_repo`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import CommandLineError

logger = logging.getLogger(__name__)


def _seed(text: str) -> int:
    """A seed ``torch.manual_seed`` takes (it fails on a larger one with "Overflow when unpacking long long")."""
    if not (text.isascii() and text.isdigit()) or int(text) >= 2**64:
        raise argparse.ArgumentTypeError(f"the seed must be an integer from 0 to 2**64 - 1, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", type=Path, help="the folder to write (new, or empty)")
    parser.add_argument("--seed", type=_seed, default=0, help="seed of the random weights (default: 0)")


def run(args: argparse.Namespace) -> int:
    from ..tiny_repo import build_tiny_repo

    try:
        folder = build_tiny_repo(args.output, seed=args.seed)
    except OSError as error:
        # atomic_folder's refusal of a folder of other files (no errno) says what to do; the rest come from the
        # OS making the parent folders (a file in the way, no permission, a read-only disk)
        message = str(error) if error.errno is None else f"cannot write {args.output}: {error}"
        raise CommandLineError(message) from None
    logger.info("wrote %s", folder)
    print(
        f"{folder}: a tiny SG-DETR + InternVideo2 repository with RANDOM weights (its moments mean nothing).\n"
        f'Try it: sgdetr predict VIDEO "a man rides a bike" --model {folder}',
        file=sys.stdout,
    )
    return 0
