"""The release scripts of ``scripts/`` as modules: ``publishing`` (the release code, not part of the package)
is loaded under the name ``scripts/push_to_hub.py`` imports it by."""

import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    """``scripts/<name>.py`` as the module ``name`` (registered, so that the scripts find each other)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


publishing = load_script("publishing")
