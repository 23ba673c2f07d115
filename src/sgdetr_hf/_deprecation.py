"""One-release aliases of moved names: they keep working and warn with ``FutureWarning`` once.

A moved module leaves a shim at its old path: :func:`alias_module` makes the old name the new module itself,
or the shim imports the moved names and calls :func:`warn_moved`; either way it warns at import, which
happens once per process. A name moved out of a module that stays uses :func:`moved_names` as that
module's ``__getattr__``: it warns on the first access, then caches the name in the module.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def warn_moved(old: str, new: str) -> None:
    """Warn that ``old`` (a module or name) is now ``new``."""
    warnings.warn(
        f"{old} moved to {new}; the old name will be removed in the next release",
        FutureWarning,
        stacklevel=3,
    )


def alias_module(old: str, new: str) -> None:
    """Make module ``old`` (the shim calling this while it is imported) the module ``new``."""
    warn_moved(old, new)
    sys.modules[old] = importlib.import_module(new)  # the import system returns what sys.modules holds


def moved_names(module_globals: dict[str, Any], moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``moved``: ``{old name: "new.module:new_name"}``."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module_globals['__name__']!r} has no attribute {name!r}")
        new_module, _, new_name = moved[name].partition(":")
        warn_moved(f"{module_globals['__name__']}.{name}", f"{new_module}.{new_name}")
        value = getattr(importlib.import_module(new_module), new_name)
        module_globals[name] = value  # found directly from now on: warn once
        return value

    return __getattr__
