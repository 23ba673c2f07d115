"""The package is lazy (``import sgdetr_hf`` imports no torch or transformers) and still registers its Auto
classes and pipeline task as soon as transformers is imported, whatever the order of the imports.

Each case runs in a fresh interpreter: in the test process everything is imported already."""

import json
import subprocess
import sys

import pytest

REPORT_REGISTRATION = (
    "from transformers import AutoConfig, AutoModel\n"
    "from transformers.pipelines import PIPELINE_REGISTRY\n"
    "config = AutoConfig.for_model('sg-detr', hidden_size=32)\n"
    "intern = AutoConfig.for_model('internvideo2')\n"
    "print(json.dumps([type(config).__name__, type(intern).__name__,\n"
    "                  AutoModel._model_mapping[type(config)].__name__,\n"
    "                  'video-moment-retrieval' in PIPELINE_REGISTRY.supported_tasks]))\n"
)
REGISTERED = ["SGDetrConfig", "InternVideo2Config", "SGDetrForMomentRetrieval", True]


def run_python(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_importing_the_package_imports_neither_torch_nor_transformers():
    script = (
        "import json, sys\n"
        "import sgdetr_hf, sgdetr_hf.metrics, sgdetr_hf.files, sgdetr_hf.commands\n"
        "print(json.dumps([name for name in ('torch', 'transformers') if name in sys.modules]))\n"
    )
    assert json.loads(run_python(script)) == []


@pytest.mark.parametrize(
    "imports",
    [
        "import sgdetr_hf",  # the README's order: the package, then transformers
        "import transformers\nimport sgdetr_hf",  # transformers first: registered at once
        "from sgdetr_hf.modeling_sgdetr import SGDetrForMomentRetrieval",  # a submodule that imports transformers
        "import sgdetr_hf\nsgdetr_hf.SGDetrProcessor",  # a public name, imported on first access
    ],
)
def test_auto_classes_and_the_pipeline_are_registered_whatever_the_import_order(imports):
    assert json.loads(run_python(f"import json\n{imports}\n{REPORT_REGISTRATION}")) == REGISTERED


def test_public_names_resolve_and_unknown_names_raise():
    import sgdetr_hf
    from sgdetr_hf.modeling_sgdetr import SGDetrForMomentRetrieval

    assert sgdetr_hf.SGDetrForMomentRetrieval is SGDetrForMomentRetrieval
    assert set(sgdetr_hf.__all__) <= set(dir(sgdetr_hf))
    with pytest.raises(AttributeError, match="no_such_name"):
        sgdetr_hf.no_such_name  # noqa: B018


def test_all_lists_exactly_the_lazy_public_names():
    import sgdetr_hf

    assert sorted(sgdetr_hf.__all__) == sorted(sgdetr_hf._PUBLIC_NAMES)
