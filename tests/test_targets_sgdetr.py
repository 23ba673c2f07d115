"""Target preparation (``targets_sgdetr``): clip labels, window padding, margin pairs and the negative-pair
mask, against values worked out by hand from the labels. Each test kills a hand-made mutant that the loss
tests let pass."""

import torch

from sgdetr_hf.targets_sgdetr import prepare_targets, sample_margin_pairs

MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]).bool()


def _labels(**extra):
    labels = [
        {"spans": [[0.25, 0.5]], "saliency_scores": [0.0, 4.0, 8.0, 0.0]},
        # a score list as long as the padded batch: the score of the padding clip is no label
        {"spans": [[0.2, 0.2], [0.7, 0.4]], "saliency_scores": [2.0, 0.0, 0.0, 6.0]},
        {"spans": torch.zeros(0, 2), "saliency_scores": [0.0, 0.0]},  # highlight-only, nothing relevant
    ]
    for key, values in extra.items():
        for label, value in zip(labels, values):
            label[key] = value
    return labels


def test_windows_are_padded_with_a_mask_of_the_real_ones():
    targets = prepare_targets(_labels(), torch.zeros(3, 4, 1), MASK, num_margin_pairs=2)
    assert targets.span_mask.tolist() == [[True, False], [True, True], [False, False]]
    expected = torch.tensor([[[0.25, 0.5], [0, 0]], [[0.2, 0.2], [0.7, 0.4]], [[0, 0], [0, 0]]])
    assert torch.equal(targets.padded_spans, expected)
    assert targets.has_windows.tolist() == [True, True, False]


def test_clip_labels_are_zero_at_padding_and_relevant_where_positive():
    targets = prepare_targets(_labels(), torch.zeros(3, 4, 1), MASK, num_margin_pairs=2)
    assert targets.saliency.tolist() == [[0, 4, 8, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
    assert targets.moment_mask.tolist() == [
        [False, True, True, False],
        [True, False, False, False],
        [False, False, False, False],
    ]


def test_given_margin_pairs_are_invalid_for_a_sample_without_a_relevant_clip():
    labels = _labels(saliency_pos_idx=[[2, 1], [0, 0], [0, 1]], saliency_neg_idx=[[0, 3], [1, 2], [1, 0]])
    targets = prepare_targets(labels, torch.zeros(3, 4, 1), MASK, num_margin_pairs=2)
    assert targets.margin_pos_idx.tolist() == [[2, 1], [0, 0], [0, 1]]
    assert targets.margin_neg_idx.tolist() == [[0, 3], [1, 2], [1, 0]]
    assert targets.margin_pair_valid.tolist() == [[True, True], [True, True], [False, False]]


def test_negative_pairs_without_video_ids_compare_each_video_with_the_next_one():
    """Video b is paired with the text of sample (b + 1) % B: with identical features for samples 0 and 1
    (one source video) pair 0 is no negative, pairs 1 -> 2 and 2 -> 0 are."""
    mask = torch.ones(3, 4, dtype=torch.bool)
    features = torch.stack([torch.ones(4, 2), torch.ones(4, 2), torch.zeros(4, 2)])
    labels = [{"spans": [[0.5, 0.5]], "saliency_scores": [1.0, 0, 0, 0]} for _ in range(3)]
    targets = prepare_targets(labels, features, mask, num_margin_pairs=2)
    assert targets.neg_pair_mask.tolist() == [False, True, True]
    # with video ids, the same rolling by the ids
    for label, video_id in zip(labels, ["a", "b", "b"]):
        label["video_id"] = video_id
    targets = prepare_targets(labels, features, mask, num_margin_pairs=2)
    assert targets.neg_pair_mask.tolist() == [True, False, True]


def test_easy_pairs_draw_from_every_relevant_clip_and_every_irrelevant_one():
    """CG-DETR's easy pairs: any relevant clip (not only the best ones) against any irrelevant clip."""
    saliency = torch.tensor([[0.0, 4.0, 12.0, 8.0, 4.0, 0.0]])
    video_mask = torch.ones(1, 6, dtype=torch.bool)
    generator = torch.Generator().manual_seed(1)
    seen_pos, seen_neg, hard = set(), set(), set()
    for _ in range(200):
        pos, neg, _ = sample_margin_pairs(saliency, video_mask, torch.rand(2, 3, 1, generator=generator))
        seen_pos |= set(pos[0, 1:].tolist())
        seen_neg |= set(neg[0, 1:].tolist())
        hard.add((pos[0, 0].item(), neg[0, 0].item()))
    assert seen_pos == {1, 2, 3, 4} and seen_neg == {0, 5}
    assert hard == {(2, 1), (2, 4)}  # the highest clip against each lowest-relevant one
