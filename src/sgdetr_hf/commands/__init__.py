"""The ``sgdetr`` command line: one sub-command per capability.

    sgdetr [--log-level LEVEL] COMMAND [options]     (``--log-level`` may also follow COMMAND)

Each sub-command is a module of this package with ``add_arguments(parser)`` and ``run(args) -> int`` (the
exit code); this file only wires them together. ``main`` imports only the module of the sub-command it runs
(``sgdetr --help`` imports none), and modules import their heavy dependencies inside ``run`` where the
arguments can be declared without them: ``sgdetr evaluate`` never imports torch or transformers. A module
may also set

- ``PARSER_OPTIONS``: more ``argparse.ArgumentParser`` keywords for its parser (epilog, formatter, ...);
- ``TAKES_OVERRIDES = True``: the arguments its parser does not know are handed to ``run`` as
  ``args.overrides`` (``train``'s recipe keys) instead of being refused.

A command refuses a bad combination of arguments by raising :class:`CommandLineError`: the sub-command's
usage and the message are printed and the exit code is 2, as for any argparse error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterable, Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "sgdetr_hf.commands.train",
        "train or fine-tune SG-DETR with a recipe (under accelerate launch)",
    ),
    "evaluate-model": (
        "sgdetr_hf.commands.evaluate_model",
        "predictions and metrics of a trained (or pre-trained: zero-shot) model on a dataset split",
    ),
    "evaluate": ("sgdetr_hf.commands.evaluate", "score predictions against annotations (QVHighlights, ...)"),
    "predict": (
        "sgdetr_hf.commands.predict",
        "moments of a video that match text queries (table, JSON, plot)",
    ),
    "demo": ("sgdetr_hf.commands.demo", "predict windows and saliency for a seeded feature sequence"),
    "extract-features": (
        "sgdetr_hf.commands.extract_features",
        "InternVideo2 features of videos and queries",
    ),
    "convert-internvideo2": (
        "sgdetr_hf.commands.convert_internvideo2",
        "official InternVideo2 checkpoint -> native",
    ),
    "build-tiny-repo": (
        "sgdetr_hf.commands.build_tiny_repo",
        "a complete tiny model repository with RANDOM weights, for integration tests",
    ),
}


class CommandLineError(ValueError):
    """Arguments that parse but do not go together; ``main`` reports it as a usage error (exit code 2)."""


def configure_logging(level: str) -> None:
    """Log at ``level`` on the main process of a launch; the other processes only warn."""
    main_process = int(os.environ.get("LOCAL_RANK", "0")) == 0
    logging.basicConfig(
        level=level.upper() if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per checkpoint is ours
    if not main_process:
        import datasets

        datasets.disable_progress_bars()


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``sgdetr`` parser. Every sub-command is listed, but only those in ``commands`` (default: all)
    have their module imported and their arguments declared."""
    declared = set(COMMANDS if commands is None else commands)
    parser = argparse.ArgumentParser(prog="sgdetr", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name not in declared:
            subparsers.add_parser(name, help=help_text, description=help_text)
            continue
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name, help=help_text, description=help_text, **getattr(module, "PARSER_OPTIONS", {})
        )
        # SUPPRESS: given after COMMAND it wins, otherwise the value before COMMAND (or INFO) stays
        sub.add_argument("--log-level", default=argparse.SUPPRESS, help="logging level (default: INFO)")
        module.add_arguments(sub)
        sub.set_defaults(_module=module, _parser=sub)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The sub-command that ``argv`` runs: its first word that is not ``sgdetr``'s own option (or the value
    of ``--log-level``); ``None`` when there is none or it names no sub-command (argparse then says so)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``sgdetr``: parse ``argv`` (default: ``sys.argv[1:]``), run the sub-command, return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = command_in(argv)
    args, rest = build_parser([command] if command else []).parse_known_args(argv)
    module, parser = args._module, args._parser
    if getattr(module, "TAKES_OVERRIDES", False):
        args.overrides = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    configure_logging(args.log_level)
    try:
        return int(module.run(args) or 0)
    except CommandLineError as error:
        parser.error(str(error))
