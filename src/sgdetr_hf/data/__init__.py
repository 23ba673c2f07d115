"""Datasets for SG-DETR: the shared schema, readers, builder, collator, InterVid-MR generation, demo and toy data.

This sub-package is never shipped as Hub remote code, so it imports freely.
"""

from .collator import MomentRetrievalCollator
from .schema import ANNOTATION_COLUMNS, CLIP_LENGTHS, binary_clip_saliency, num_clips, source_video_id
from .synthetic import PlantedQuery, ToyGroundingTask, ToyTaskConfig

__all__ = [
    "ANNOTATION_COLUMNS",
    "CLIP_LENGTHS",
    "MomentRetrievalCollator",
    "PlantedQuery",
    "ToyGroundingTask",
    "ToyTaskConfig",
    "binary_clip_saliency",
    "num_clips",
    "source_video_id",
]
