"""Deprecated (kept one release): the release code is ``scripts/publishing.py`` of the source checkout, as it
reads ``hub/`` and ``model_card.md`` from there; ``DEFAULT_MODEL_REPO`` is :mod:`sgdetr_hf.hub_ids`.

Its other names still resolve where this package runs from a checkout (an editable install), the only
place they ever worked.
"""

import importlib.util
import sys
from pathlib import Path

from ._deprecation import warn_moved
from .hub_ids import DEFAULT_MODEL_REPO

warn_moved(__name__, "scripts/publishing.py of the source checkout (DEFAULT_MODEL_REPO: sgdetr_hf.hub_ids)")

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "publishing.py"
_release = None  # scripts/publishing.py, loaded on the first use of one of its names


def __getattr__(name: str):
    global _release
    if name.startswith("__"):  # probes of the import system and inspect: never load the release code
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _release is None:
        if not _SCRIPT.is_file():
            raise AttributeError(
                f"sgdetr_hf.publishing.{name}: the release code moved to scripts/publishing.py of the source "
                f"checkout, and this installation has none ({_SCRIPT} is missing)"
            )
        spec = importlib.util.spec_from_file_location("sgdetr_hf._release_publishing", _SCRIPT)
        release = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its dataclasses look it up
        spec.loader.exec_module(release)
        _release = release
    return getattr(_release, name)


__all__ = ["DEFAULT_MODEL_REPO"]
