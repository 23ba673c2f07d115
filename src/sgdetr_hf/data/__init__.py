"""Datasets for SG-DETR: the shared schema, readers, builder, collator, InterVid-MR generation, demo and toy data.

This sub-package is never shipped as Hub remote code, so it imports freely.
"""

from .builder import ArrayFeatures, BuildReport, FeatureFolder, build_dataset
from .collator import MomentRetrievalCollator
from .dataset import MomentRetrievalDataset, load_moment_retrieval
from .demo import DEMO_NAME, build_demo_dataset
from .npz_features import PUBLISHED_LAYOUTS, NpzFeatures, NpzLayout
from .readers import read_annotations
from .schema import ANNOTATION_COLUMNS, CLIP_LENGTHS, binary_clip_saliency, num_clips, source_video_id
from .synthetic import PlantedQuery, ToyGroundingTask, ToyTaskConfig

__all__ = [
    "ANNOTATION_COLUMNS",
    "CLIP_LENGTHS",
    "DEMO_NAME",
    "ArrayFeatures",
    "BuildReport",
    "FeatureFolder",
    "MomentRetrievalCollator",
    "MomentRetrievalDataset",
    "NpzFeatures",
    "NpzLayout",
    "PUBLISHED_LAYOUTS",
    "PlantedQuery",
    "ToyGroundingTask",
    "ToyTaskConfig",
    "binary_clip_saliency",
    "build_dataset",
    "build_demo_dataset",
    "load_moment_retrieval",
    "num_clips",
    "read_annotations",
    "source_video_id",
]
