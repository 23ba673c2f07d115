"""The package's layering, read from the source with ``ast`` (lazy imports inside functions count too).

Layers, bottom to top; a module may import its own layer and the ones below, never one above:

1-3. the Hub remote code (what ``save_pretrained`` copies into a model repository): flat modules that
     import only each other (``from .x import y``) and third-party packages;
4.   helpers that never travel as remote code: file writing, plots, data, metrics;
5.   training;
6.   the ``sgdetr`` command and its sub-commands;
7.   the package's ``__init__`` (the public API).

Deprecated shims (one release) import the new location and are the only exception.
"""

import ast
import json
import re
from pathlib import Path

import pytest

from pipeline_testing import save_tiny_model_repo

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "sgdetr_hf"
PACKAGE = PACKAGE_DIR.name

REMOTE_LAYERS = [
    {
        "configuration_sgdetr",
        "configuration_internvideo2",
        "loading_sgdetr",
        "spans",
        "layers_sgdetr",
        "targets_sgdetr",
    },
    {"modeling_sgdetr", "detector_sgdetr", "loss_sgdetr", "modeling_internvideo2"},
    {
        "postprocessing_sgdetr",
        "processing_sgdetr",
        "pipeline_sgdetr",
        "long_video_sgdetr",
        "video_io_sgdetr",
        "video_processing_sgdetr",
        "feature_extraction_sgdetr",
    },
]
REMOTE_CODE = set().union(*REMOTE_LAYERS)
#: Each layer lists flat modules and sub-packages by name; ``sgdetr_hf`` is the package's ``__init__``.
LAYERS = [
    *REMOTE_LAYERS,
    {
        "files",
        "hub_ids",
        "visualization",
        "benchmarking",
        "cpu_memory",
        "tiny_repo",
        "_deprecation",
        "data",
        "metrics",
    },
    {"training"},
    {"commands"},
    {PACKAGE},
]
#: Old module paths kept for one release; each warns and re-exports the new location.
DEPRECATED_SHIMS = {
    "cli",
    "convert_internvideo2",
    "demo",
    "extract_features",
    "predict",
    "publishing",
    "metrics.cli",
    "training.commands",
    "training.files",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE_DIR.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[str, int, int]]:
    """``(imported module, line, relative level)`` of every import statement in ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            for alias in node.names:  # `from . import trainer` imports the sub-module
                submodule = f"{module}.{alias.name}"
                found.append((submodule if is_module(submodule) else module, node.lineno, node.level))
    return found


def key(module: str) -> str:
    """The layer entry of a module: its flat name or sub-package below ``sgdetr_hf``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def layer(module: str) -> int:
    (index,) = [i for i, members in enumerate(LAYERS) if key(module) in members]
    return index


def shim_name(module: str) -> str:
    return module.removeprefix(f"{PACKAGE}.")


SOURCES = sorted(
    path for path in PACKAGE_DIR.rglob("*.py") if "sgdetr_eval" not in path.relative_to(PACKAGE_DIR).parts
)


def test_every_module_has_a_layer():
    unplaced = [
        module_name(p)
        for p in SOURCES
        if shim_name(module_name(p)) not in DEPRECATED_SHIMS
        and not any(key(module_name(p)) in members for members in LAYERS)
    ]
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"
    flat = {p.stem for p in PACKAGE_DIR.glob("*.py")} - {"__init__"} - DEPRECATED_SHIMS
    assert flat >= REMOTE_CODE


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_no_module_imports_a_layer_above_it(path):
    module = module_name(path)
    if shim_name(module) in DEPRECATED_SHIMS:
        return
    upward = [
        f"line {line}: {target}"
        for target, line, _ in imports(path)
        if target.split(".")[0] == PACKAGE and layer(target) > layer(module)
    ]
    assert not upward, f"{module} (layer {layer(module) + 1}) imports a higher layer: {upward}"


@pytest.mark.parametrize("name", sorted(REMOTE_CODE))
def test_remote_code_imports_only_remote_siblings_and_third_party(name):
    wrong = [
        f"line {line}: {target}"
        for target, line, level in imports(PACKAGE_DIR / f"{name}.py")
        if target.split(".")[0] == PACKAGE and (level != 1 or key(target) not in REMOTE_CODE)
    ]
    assert not wrong, f"{name} is Hub remote code; it may import only `from .<remote module> import`: {wrong}"


def test_the_metric_folder_is_self_contained():
    folder = PACKAGE_DIR / "metrics" / "sgdetr_eval"
    for path in folder.glob("*.py"):
        outside = [
            target for target, _, level in imports(path) if target.split(".")[0] == PACKAGE and level != 1
        ]
        assert not outside, f"{path.name} must run without the package: {outside}"


def test_remote_code_is_what_save_pretrained_copies(tmp_path):
    from sgdetr_hf import SGDetrForMomentRetrieval, VideoMomentRetrievalPipeline

    model = SGDetrForMomentRetrieval.from_pretrained(save_tiny_model_repo(tmp_path / "model"))
    VideoMomentRetrievalPipeline(model=model, encoder=False).save_pretrained(tmp_path / "repo")
    copied = {path.stem for path in (tmp_path / "repo").glob("*.py")}
    assert copied == REMOTE_CODE
    assert json.loads((tmp_path / "repo" / "config.json").read_text())["auto_map"]


def test_the_readme_module_table_matches_the_tree():
    """Every module and sub-package of the layering has a row in the README's table, in its layer, and the
    table names nothing the tree lacks."""
    readme = (PACKAGE_DIR.parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| layer | module (`src/sgdetr_hf/`) | what |", 1)[1].split("\n\n", 1)[0]
    rows, row_layer = {}, None
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        row_layer = cells[0] or row_layer
        for name in re.findall(r"`([\w/]+?)(?:\.py|/)`", cells[1]):
            rows[PACKAGE if name == "__init__" else name] = row_layer
    placed = {name for members in LAYERS for name in members if name != "_deprecation"}
    assert set(rows) == placed, f"README table vs LAYERS: {sorted(set(rows) ^ placed)}"
    readme_layers = list(dict.fromkeys(rows.values()))
    for name, readme_layer in rows.items():
        (index,) = [i for i, members in enumerate(LAYERS) if name in members]
        assert readme_layers.index(readme_layer) == index, (
            f"{name} is in layer {index + 1}, not {readme_layer}"
        )
