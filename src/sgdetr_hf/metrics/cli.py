"""Deprecated: ``sgdetr evaluate`` is :mod:`sgdetr_hf.commands.evaluate` (kept one release)."""

from .._deprecation import warn_moved
from ..commands.evaluate import add_arguments, run
from .table import format_metrics_table as format_table

warn_moved(__name__, "sgdetr_hf.commands.evaluate")

__all__ = ["add_arguments", "format_table", "run"]
