"""SG-DETR: Saliency-Guided DETR for video moment retrieval and highlight detection.

The package is lazy: ``import sgdetr_hf`` (and so ``import sgdetr_hf.metrics``, ``sgdetr evaluate``, ...)
imports neither torch nor transformers; each public name is imported on first use. The model, config,
processor and pipeline are still registered with the transformers Auto classes after ``import sgdetr_hf``,
so ``AutoModel.from_pretrained(dir_or_repo)`` works without ``trust_remote_code``: the registration runs
as soon as transformers is imported (at once when it already is), and needs no call from the user.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the submodule that defines it (imported on first access of the name)
_PUBLIC_NAMES: dict[str, str] = {
    "InternVideo2Config": "configuration_internvideo2",
    "InternVideo2TextConfig": "configuration_internvideo2",
    "InternVideo2VisionConfig": "configuration_internvideo2",
    "InternVideo2Model": "modeling_internvideo2",
    "InternVideo2TextModel": "modeling_internvideo2",
    "InternVideo2VisionModel": "modeling_internvideo2",
    "SGDetrConfig": "configuration_sgdetr",
    "SGDetrFeatureExtractor": "feature_extraction_sgdetr",
    "SGDetrForMomentRetrieval": "modeling_sgdetr",
    "SGDetrModel": "modeling_sgdetr",
    "SGDetrOutput": "modeling_sgdetr",
    "SGDetrProcessor": "processing_sgdetr",
    "SGDetrVideoProcessor": "video_processing_sgdetr",
    "VideoMomentRetrievalPipeline": "pipeline_sgdetr",
    "post_process_moment_retrieval": "postprocessing_sgdetr",
    "write_qvhighlights_predictions": "files",
}

__all__ = [
    "InternVideo2Config",
    "InternVideo2Model",
    "InternVideo2TextConfig",
    "InternVideo2TextModel",
    "InternVideo2VisionConfig",
    "InternVideo2VisionModel",
    "SGDetrConfig",
    "SGDetrFeatureExtractor",
    "SGDetrForMomentRetrieval",
    "SGDetrModel",
    "SGDetrOutput",
    "SGDetrProcessor",
    "SGDetrVideoProcessor",
    "VideoMomentRetrievalPipeline",
    "post_process_moment_retrieval",
    "write_qvhighlights_predictions",
]  # the keys of _PUBLIC_NAMES (a literal, for static analysis)

if TYPE_CHECKING:  # the names as static analysis sees them; at run time __getattr__ imports them
    from .configuration_internvideo2 import (
        InternVideo2Config,
        InternVideo2TextConfig,
        InternVideo2VisionConfig,
    )
    from .configuration_sgdetr import SGDetrConfig
    from .feature_extraction_sgdetr import SGDetrFeatureExtractor
    from .files import write_qvhighlights_predictions
    from .modeling_internvideo2 import InternVideo2Model, InternVideo2TextModel, InternVideo2VisionModel
    from .modeling_sgdetr import SGDetrForMomentRetrieval, SGDetrModel, SGDetrOutput
    from .pipeline_sgdetr import VideoMomentRetrievalPipeline
    from .postprocessing_sgdetr import post_process_moment_retrieval
    from .processing_sgdetr import SGDetrProcessor
    from .video_processing_sgdetr import SGDetrVideoProcessor


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC_NAMES[name]}", __name__), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC_NAMES))


def _register_sgdetr() -> None:
    """Register SG-DETR with the Auto classes. ``AutoModel`` resolves to the class that predicts
    (transformers has no Auto class for moment retrieval); ``register_for_auto_class`` makes saved folders
    carry ``auto_map`` so they also load with ``trust_remote_code=True`` where this package is absent."""
    from transformers import AutoConfig, AutoModel, AutoProcessor

    from .configuration_sgdetr import SGDetrConfig
    from .modeling_sgdetr import SGDetrForMomentRetrieval
    from .processing_sgdetr import SGDetrProcessor

    AutoConfig.register(SGDetrConfig.model_type, SGDetrConfig, exist_ok=True)
    AutoModel.register(SGDetrConfig, SGDetrForMomentRetrieval, exist_ok=True)
    SGDetrConfig.register_for_auto_class("AutoConfig")
    SGDetrForMomentRetrieval.register_for_auto_class("AutoModel")
    AutoProcessor.register(SGDetrConfig, SGDetrProcessor, exist_ok=True)
    SGDetrProcessor.register_for_auto_class("AutoProcessor")


def _register_internvideo2() -> None:
    """Register the InternVideo2 encoders (the folders written by ``convert_internvideo2``) likewise."""
    from transformers import AutoConfig, AutoModel, AutoProcessor

    from .configuration_internvideo2 import (
        InternVideo2Config,
        InternVideo2TextConfig,
        InternVideo2VisionConfig,
    )
    from .modeling_internvideo2 import InternVideo2Model, InternVideo2TextModel, InternVideo2VisionModel
    from .processing_sgdetr import SGDetrProcessor

    for config_class, model_class in (
        (InternVideo2Config, InternVideo2Model),
        (InternVideo2VisionConfig, InternVideo2VisionModel),
        (InternVideo2TextConfig, InternVideo2TextModel),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
    AutoProcessor.register(InternVideo2Config, SGDetrProcessor, exist_ok=True)
    InternVideo2Config.register_for_auto_class("AutoConfig")
    InternVideo2Model.register_for_auto_class("AutoModel")


def _register_pipeline() -> None:
    """Register the "video-moment-retrieval" task, so ``pipeline("video-moment-retrieval", model=model)`` works.
    A saved folder names its pipeline in ``config.json`` (``custom_pipelines``), for which transformers asks for
    ``trust_remote_code=True`` or ``pipeline_class=VideoMomentRetrievalPipeline`` (the installed code)."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    from .pipeline_sgdetr import VideoMomentRetrievalPipeline

    PIPELINE_REGISTRY.register_pipeline(
        "video-moment-retrieval",
        pipeline_class=VideoMomentRetrievalPipeline,
        pt_model=AutoModel,
        type="multimodal",
    )


# The registration needs the model classes, hence torch and transformers (seconds to import), which most
# of the package (metrics, data, the command line) never needs. So it waits for transformers: a
# meta-path finder wraps the loader of `transformers` and of this package's modules and registers after
# one of them has run, once transformers is loaded and none of our modules is half-imported (registering
# inside `from transformers import ...` of modeling_sgdetr would import modeling_sgdetr again, unfinished).
_registration_lock = threading.RLock()
_registration_state = {"done": False, "running": False}


def _is_initializing(module_name: str) -> bool:
    """Whether ``module_name`` is being imported right now (importlib marks its spec while it runs)."""
    module = sys.modules.get(module_name)
    return module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False)


def _register_when_possible(just_loaded: str) -> None:
    with _registration_lock:
        if _registration_state["done"] or _registration_state["running"]:
            return
        # `just_loaded` itself is still marked as initializing: its exec_module has not returned yet
        if "transformers" not in sys.modules or (
            just_loaded != "transformers" and _is_initializing("transformers")
        ):
            return
        ours = [name for name in list(sys.modules) if name.startswith(f"{__name__}.") and name != just_loaded]
        if any(_is_initializing(name) for name in ours):
            return
        _registration_state["running"] = True
        try:
            _register_sgdetr()
            _register_internvideo2()
            _register_pipeline()
            _registration_state["done"] = True
        finally:
            _registration_state["running"] = False
        if _REGISTRATION_FINDER in sys.meta_path:
            sys.meta_path.remove(_REGISTRATION_FINDER)


class _RegisteringLoader(importlib.abc.Loader):
    """The loader of a module, which tries the Auto registration once the module has run; every other
    attribute (``get_resource_reader``, ``get_source``, ...) is the wrapped loader's."""

    def __init__(self, loader: importlib.abc.Loader, module_name: str) -> None:
        self._loader = loader
        self._module_name = module_name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _register_when_possible(self._module_name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _RegistrationFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the finders after it and wraps the loader of the modules it watches."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "transformers" and not fullname.startswith(f"{__name__}."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader, fullname)
                return spec
        return None


_REGISTRATION_FINDER = _RegistrationFinder()

if "transformers" in sys.modules:  # imported before us: register now, as a plain eager import would
    _register_when_possible("transformers")
else:
    sys.meta_path.insert(0, _REGISTRATION_FINDER)
