"""A global batch computed in parts (processes' shares, gradient-accumulation micro-batches) equals the whole."""

import pytest
import torch
from accelerate import Accelerator

from sgdetr_hf.loss_sgdetr import count_loss_normalizers
from sgdetr_hf.targets_sgdetr import prepare_targets
from sgdetr_hf.training.global_batch import build_batch_contexts, split_micro_batches
from sgdetr_testing import SGDetrModelTester

MODEL_INPUTS = ("video_features", "video_mask", "text_features", "text_mask", "labels")
# Dropout draws per forward: off, so that the parts and the whole see the same network.
TESTER = SGDetrModelTester(**SGDetrModelTester.SHALLOW, dropout=0.0, input_dropout=0.0)


def _loss_and_gradients(model, forwards):
    """Total loss, summed loss_dict and gradients of a list of (inputs, batch_context) forwards."""
    model.zero_grad()
    total, terms = 0.0, {}
    for inputs, context in forwards:
        outputs = model(**inputs, batch_context=context)
        outputs.loss.backward()
        total += outputs.loss.item()
        for name, value in outputs.loss_dict.items():
            terms[name] = terms.get(name, 0.0) + value.item()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return total, terms, gradients


@pytest.fixture(scope="module")
def batch():
    collated, _ = TESTER.toy_batch(6)
    # one highlight-only sample (no window) and one pair of samples of the same source video (not a negative)
    collated["labels"][1]["spans"] = torch.zeros(0, 2)
    collated["labels"][4]["video_id"] = collated["labels"][3]["video_id"]
    return {name: collated[name] for name in MODEL_INPUTS}


@pytest.mark.parametrize("num_parts", [2, 3])
def test_parts_with_the_global_context_add_up_to_the_whole_batch(batch, num_parts):
    model = TESTER.create_model()
    whole_loss, whole_terms, whole_gradients = _loss_and_gradients(model, [(batch, None)])

    parts = split_micro_batches(batch, num_parts)
    contexts = build_batch_contexts(Accelerator(cpu=True), model.config, parts)
    assert [c.start for c in contexts] == list(range(0, 6, 6 // num_parts))
    loss, terms, gradients = _loss_and_gradients(model, list(zip(parts, contexts)))

    assert loss == pytest.approx(whole_loss, rel=1e-5)
    assert terms.keys() == whole_terms.keys() and any(k.startswith("hl_bce_neg") for k in terms)
    for name, value in whole_terms.items():
        assert terms[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert gradients.keys() == whole_gradients.keys()
    # fp32 rounding aside (some gradients are zero in exact arithmetic, ~1e-7 here), every tensor agrees
    largest = max(g.abs().max() for g in whole_gradients.values())
    for name, gradient in whole_gradients.items():
        scale = gradient.abs().max().clamp(min=1e-3 * largest)
        assert ((gradients[name] - gradient).abs().max() / scale) < 1e-4, name

    # Without the context each part normalises, pairs and pools alone: the mean of the parts (what DDP and
    # accelerate's accumulation averaged before) is not the whole batch's loss.
    own_loss, _, _ = _loss_and_gradients(model, [(part, None) for part in parts])
    assert abs(own_loss / num_parts - whole_loss) > 1e-3 * whole_loss


def test_split_micro_batches_refuses_an_uneven_split(batch):
    with pytest.raises(ValueError, match="6 samples cannot be split into 4 equal micro-batches"):
        split_micro_batches(batch, 4)


def test_batch_context_must_hold_the_batch(batch):
    model = TESTER.create_model()
    parts = split_micro_batches(batch, 2)
    context = build_batch_contexts(Accelerator(cpu=True), model.config, parts)[1]
    with pytest.raises(ValueError, match="samples 3..8 are not inside its global batch of 6 samples"):
        model(**batch, batch_context=context)
    with pytest.raises(ValueError, match="batch_context is a training input"):
        model(*[batch[name] for name in MODEL_INPUTS[:4]], batch_context=context)


def test_counted_normalizers_are_the_counts_a_forward_divides_by(batch):
    """count_loss_normalizers (labels only) gives the counts the loss reads from a forward's outputs."""
    model = TESTER.create_model()
    whole_loss, whole_terms, _ = _loss_and_gradients(model, [(batch, None)])
    video_mask = batch["video_mask"].bool()
    context = build_batch_contexts(Accelerator(cpu=True), model.config, [batch])[0]
    targets = prepare_targets(batch["labels"], batch["video_features"], video_mask, 2, context)
    counts = count_loss_normalizers(model.config, targets)
    assert counts == context.loss_normalizers  # one micro-batch, one process: the global counts are its own
    assert counts["co_positive"] > 0 and counts["dn_valid"] == 2 * counts["dn_positive"] > 0
    loss, terms, _ = _loss_and_gradients(model, [(batch, context)])
    assert loss == pytest.approx(whole_loss, rel=1e-6)
    assert terms == pytest.approx(whole_terms, rel=1e-6, abs=1e-8)
