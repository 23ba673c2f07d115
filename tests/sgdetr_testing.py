"""Tiny SG-DETR configs, models, inputs and labels shared by the tests (in the spirit of transformers' model
testers): one place that says what a test-sized SG-DETR is."""

from __future__ import annotations

import torch

from sgdetr_hf import SGDetrConfig, SGDetrForMomentRetrieval
from sgdetr_hf.data import MomentRetrievalCollator, ToyGroundingTask, ToyTaskConfig


class SGDetrModelTester:
    """Builds test-sized SG-DETRs: every block of the full model, 32-d wide, 16-d input features.

    Args:
        **config: fields that differ from the tiny defaults for every config this tester builds.
    """

    TINY = dict(
        hidden_size=32, num_attention_heads=4, ffn_dim=64, group_norm_groups=8, video_feature_dim=16,
        text_feature_dim=16,
    )  # fmt: skip
    #: A shallower variant (one layer per stack, few queries) for tests that train or run many forwards.
    SHALLOW = dict(
        num_queries=10, num_pooling_layers=1, num_sgca_layers=1, num_encoder_layers=1, num_decoder_layers=2,
        num_dn_groups=2,
    )  # fmt: skip

    def __init__(self, **config):
        self.config = {**self.TINY, **config}

    def get_config(self, **overrides) -> SGDetrConfig:
        return SGDetrConfig(**{**self.config, **overrides})

    def create_model(self, seed: int = 0, **overrides) -> SGDetrForMomentRetrieval:
        """A seeded random model in train mode (call ``.eval()`` for inference)."""
        torch.manual_seed(seed)
        return SGDetrForMomentRetrieval(self.get_config(**overrides)).train()

    def prepare_inputs(
        self, lengths: list[int], num_clips: int, text_lengths: list[int], num_tokens: int, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random right-padded ``(video_features, video_mask, text_features, text_mask)``, zero at padding, drawn
        from their own generator (the global RNG is untouched)."""
        generator = torch.Generator().manual_seed(seed)
        video_mask = (torch.arange(num_clips)[None] < torch.tensor(lengths)[:, None]).float()
        text_mask = (torch.arange(num_tokens)[None] < torch.tensor(text_lengths)[:, None]).float()
        dims = self.config["video_feature_dim"], self.config["text_feature_dim"]
        video = torch.randn(len(lengths), num_clips, dims[0], generator=generator) * video_mask[..., None]
        text = torch.randn(len(lengths), num_tokens, dims[1], generator=generator) * text_mask[..., None]
        return video, video_mask, text, text_mask

    def toy_batch(self, num_samples: int, **task_overrides) -> tuple[dict, list[dict]]:
        """A collated batch of the synthetic grounding task (with its rows) at this tester's feature widths."""
        task_config = dict(
            video_dim=self.config["video_feature_dim"], text_dim=self.config["text_feature_dim"], min_clips=12,
            max_clips=20, max_windows=2,
        )  # fmt: skip
        task = ToyGroundingTask(ToyTaskConfig(**{**task_config, **task_overrides}), seed=0)
        rows = task.samples(num_samples)
        return MomentRetrievalCollator()(rows), rows
