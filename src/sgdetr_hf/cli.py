"""The ``sgdetr`` command line: one sub-command per capability.

Each sub-command lives in its own module that defines ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them together.
"""

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sgdetr_hf.demo", "predict windows and saliency for a seeded feature sequence"),
    "extract-features": ("sgdetr_hf.extract_features", "InternVideo2 features of videos and queries"),
    "convert-internvideo2": ("sgdetr_hf.convert_internvideo2", "official InternVideo2 checkpoint -> native"),
    "evaluate": ("sgdetr_hf.metrics.cli", "score predictions against annotations (QVHighlights, ...)"),
    "predict": ("sgdetr_hf.predict", "moments of a video that match text queries (table, JSON, plot)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgdetr", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
