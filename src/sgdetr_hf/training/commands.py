"""Deprecated: the training command lines are ``sgdetr train`` and ``sgdetr evaluate-model``
(:mod:`sgdetr_hf.commands.train`, :mod:`sgdetr_hf.commands.evaluate_model`); kept one release."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._deprecation import warn_moved
from ..commands import COMMANDS, main
from ..commands.train import model_config_keys

warn_moved(__name__, "sgdetr_hf.commands (sgdetr train, sgdetr evaluate-model)")


def _arguments(argv: Sequence[str] | None) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)


def train_main(argv: Sequence[str] | None = None) -> int:
    return main(["train", *_arguments(argv)])


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    return main(["evaluate-model", *_arguments(argv)])


def _command_parser(command: str, prog: str) -> argparse.ArgumentParser:
    module_name, help_text = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=prog, description=help_text, **getattr(module, "PARSER_OPTIONS", {})
    )
    parser.add_argument("--log-level", default="INFO")
    module.add_arguments(parser)
    return parser


def build_train_parser() -> argparse.ArgumentParser:
    return _command_parser("train", "train.py")


def build_evaluate_parser() -> argparse.ArgumentParser:
    return _command_parser("evaluate-model", "evaluate.py")


__all__ = ["build_evaluate_parser", "build_train_parser", "evaluate_main", "model_config_keys", "train_main"]
