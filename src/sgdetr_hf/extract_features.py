"""Deprecated alias of :mod:`sgdetr_hf.commands.extract_features` (kept one release)."""

from ._deprecation import alias_module

alias_module(__name__, "sgdetr_hf.commands.extract_features")
