"""Deprecated alias of :mod:`sgdetr_hf.commands.convert_internvideo2` (kept one release)."""

from ._deprecation import alias_module

alias_module(__name__, "sgdetr_hf.commands.convert_internvideo2")
