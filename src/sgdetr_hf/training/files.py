"""Deprecated: the atomic writers are :mod:`sgdetr_hf.files` (kept one release)."""

from .._deprecation import warn_moved
from ..files import atomic_write_bytes, atomic_write_json, atomic_write_text

warn_moved(__name__, "sgdetr_hf.files")

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text"]
