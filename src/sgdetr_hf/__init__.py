"""SG-DETR: Saliency-Guided DETR for video moment retrieval and highlight detection.

Importing the package registers the model, config, processor and pipeline with the
transformers Auto classes, so ``AutoModel.from_pretrained(dir_or_repo)`` works without
``trust_remote_code`` when the package is installed.
"""

__version__ = "0.1.0"

from .configuration_internvideo2 import InternVideo2Config, InternVideo2TextConfig, InternVideo2VisionConfig
from .configuration_sgdetr import SGDetrConfig
from .feature_extraction_sgdetr import SGDetrFeatureExtractor
from .files import write_qvhighlights_predictions
from .modeling_internvideo2 import InternVideo2Model, InternVideo2TextModel, InternVideo2VisionModel
from .modeling_sgdetr import SGDetrForMomentRetrieval, SGDetrModel, SGDetrOutput
from .pipeline_sgdetr import VideoMomentRetrievalPipeline
from .postprocessing_sgdetr import post_process_moment_retrieval
from .processing_sgdetr import SGDetrProcessor
from .video_processing_sgdetr import SGDetrVideoProcessor


def _register_sgdetr() -> None:
    """Register SG-DETR with the Auto classes. ``AutoModel`` resolves to the class that predicts
    (transformers has no Auto class for moment retrieval); ``register_for_auto_class`` makes saved folders
    carry ``auto_map`` so they also load with ``trust_remote_code=True`` where this package is absent."""
    from transformers import AutoConfig, AutoModel, AutoProcessor

    AutoConfig.register(SGDetrConfig.model_type, SGDetrConfig, exist_ok=True)
    AutoModel.register(SGDetrConfig, SGDetrForMomentRetrieval, exist_ok=True)
    SGDetrConfig.register_for_auto_class("AutoConfig")
    SGDetrForMomentRetrieval.register_for_auto_class("AutoModel")
    AutoProcessor.register(SGDetrConfig, SGDetrProcessor, exist_ok=True)
    SGDetrProcessor.register_for_auto_class("AutoProcessor")


def _register_internvideo2() -> None:
    """Register the InternVideo2 encoders (the folders written by ``convert_internvideo2``) likewise."""
    from transformers import AutoConfig, AutoModel, AutoProcessor

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
    """Register the "video-moment-retrieval" task, so ``pipeline("video-moment-retrieval", model=dir)`` works."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    PIPELINE_REGISTRY.register_pipeline(
        "video-moment-retrieval",
        pipeline_class=VideoMomentRetrievalPipeline,
        pt_model=AutoModel,
        type="multimodal",
    )


_register_sgdetr()
_register_internvideo2()
_register_pipeline()

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
]
