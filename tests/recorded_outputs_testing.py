"""Recorded SG-DETR outputs: a change made for speed must not change any result.

:func:`compute_outputs` runs a small SG-DETR with non-trivial weights (the zero-initialised heads and the
ATSS convolutions re-drawn) on a fixed batch of three videos of different lengths: inference outputs, the
post-processed windows, every training loss term and the gradient norm of every parameter.
``tests/test_recorded_outputs.py`` compares them with ``fixtures/sgdetr_recorded_outputs.safetensors``.

Record again only when a change of results is intended (a fidelity fix, a new default), and say so in the
commit:

    python tests/recorded_outputs_testing.py --write
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from sgdetr_hf import SGDetrConfig, SGDetrForMomentRetrieval, post_process_moment_retrieval

RECORDING = Path(__file__).parent / "fixtures" / "sgdetr_recorded_outputs.safetensors"
LENGTHS = (20, 14, 7)
TOKENS = (9, 4, 6)

CONFIG = dict(
    hidden_size=32, num_attention_heads=4, ffn_dim=64, group_norm_groups=8, video_feature_dim=24,
    text_feature_dim=20, num_queries=6, num_dn_groups=2, max_atss_positive_queries=10, dropout=0.0,
    input_dropout=0.0,
)  # fmt: skip
INFERENCE_OUTPUTS = (
    "pred_spans", "pred_logits", "pred_iou_logits", "det_scores", "atss_logits", "atss_spans",
    "atss_centerness", "local_saliency", "global_saliency", "encoder_last_hidden_state",
)  # fmt: skip


def _model() -> SGDetrForMomentRetrieval:
    torch.manual_seed(0)
    model = SGDetrForMomentRetrieval(SGDetrConfig(**CONFIG))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not parameter.any() or ".atss_head." in name or name.endswith(("alpha", "beta")):
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


def _batch():
    generator = torch.Generator().manual_seed(2)
    batch, length, tokens = len(LENGTHS), max(LENGTHS), max(TOKENS)
    video = torch.randn(batch, length, CONFIG["video_feature_dim"], generator=generator)
    text = torch.randn(batch, tokens, CONFIG["text_feature_dim"], generator=generator)
    video_mask = (torch.arange(length)[None] < torch.tensor(LENGTHS)[:, None]).float()
    text_mask = (torch.arange(tokens)[None] < torch.tensor(TOKENS)[:, None]).float()
    windows = ([[0.3, 0.2], [0.75, 0.3]], [[0.5, 0.4]], [[0.2, 0.3], [0.6, 0.2], [0.9, 0.2]])
    labels = []
    for i, (n, spans) in enumerate(zip(LENGTHS, windows)):
        saliency = torch.randint(0, 5, (n,), generator=generator).float()
        pos = torch.nonzero(saliency > 0)[:2, 0]
        neg = torch.nonzero(saliency == 0)[:2, 0]
        labels.append({
            "spans": torch.tensor(spans), "saliency_scores": saliency, "video_id": f"v{i}",
            "saliency_pos_idx": pos.repeat(2)[:2], "saliency_neg_idx": neg.repeat(2)[:2],
            "sampling_seed": 100.0 * (i + 1),
        })  # fmt: skip
    return (video, video_mask, text, text_mask), labels


def compute_outputs() -> dict[str, torch.Tensor]:
    model = _model()
    inputs, labels = _batch()
    recorded = {}
    model.eval()
    with torch.no_grad():
        outputs = model(*inputs)
    for name in INFERENCE_OUTPUTS:
        recorded[f"inference.{name}"] = getattr(outputs, name)
    durations = [2.0 * n for n in LENGTHS]
    answers = post_process_moment_retrieval(outputs, durations, config=model.config, top_k=5)
    for i, answer in enumerate(answers):
        recorded[f"windows.{i}"] = torch.tensor(answer["pred_relevant_windows"])
        recorded[f"saliency.{i}"] = torch.tensor(answer["pred_saliency_scores"])
    model.train()
    torch.manual_seed(3)  # the denoising noise
    outputs = model(*inputs, labels=labels)
    outputs.loss.backward()
    recorded["loss"] = outputs.loss.detach()
    for name, value in outputs.loss_dict.items():
        recorded[f"loss.{name}"] = value.detach()
    recorded["gradient_norms"] = torch.stack([
        torch.zeros(()) if p.grad is None else p.grad.norm() for p in model.parameters()
    ])  # fmt: skip
    return {name: value.detach().contiguous().float() for name, value in recorded.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"record the outputs in {RECORDING}")
    if parser.parse_args().write:
        RECORDING.parent.mkdir(exist_ok=True)
        save_file(compute_outputs(), str(RECORDING))
        print(f"wrote {RECORDING}")
