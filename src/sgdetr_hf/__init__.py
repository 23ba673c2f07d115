"""SG-DETR: Saliency-Guided DETR for video moment retrieval and highlight detection.

Importing the package registers the model, config, processor and pipeline with the
transformers Auto classes, so ``AutoModel.from_pretrained(dir_or_repo)`` works without
``trust_remote_code`` when the package is installed.
"""

__version__ = "0.1.0"
