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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", type=Path, help="the folder to write (new, or empty)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")


def run(args: argparse.Namespace) -> int:
    from ..tiny_repo import build_tiny_repo

    try:
        folder = build_tiny_repo(args.output, seed=args.seed)
    except FileExistsError as error:
        raise CommandLineError(str(error)) from None
    logger.info("wrote %s", folder)
    print(
        f"{folder}: a tiny SG-DETR + InternVideo2 repository with RANDOM weights (its moments mean nothing).\n"
        f'Try it: sgdetr predict VIDEO "a man rides a bike" --model {folder}',
        file=sys.stdout,
    )
    return 0
