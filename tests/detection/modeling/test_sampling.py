import torch

from detection.modeling.sampling import sample_labels


def test_sampler_ratio_and_budget():
    labels = torch.cat((torch.ones(100, dtype=torch.long) * 3, torch.zeros(1000, dtype=torch.long),
                        -torch.ones(50, dtype=torch.long)))
    pos, neg = sample_labels(labels, 256, 0.5, torch.Generator().manual_seed(0))
    assert pos.numel() == 100 and neg.numel() == 156  # too few positives: negatives fill the batch
    assert (labels[pos] >= 1).all() and (labels[neg] == 0).all()
    pos, neg = sample_labels(labels, 128, 0.25, torch.Generator().manual_seed(0))
    assert pos.numel() == 32 and neg.numel() == 96
    assert len(set(pos.tolist())) == 32 and len(set(neg.tolist())) == 96  # without replacement


def test_sampler_never_picks_ignored():
    labels = torch.tensor([-1, -1, 0, 1])
    pos, neg = sample_labels(labels, 10, 0.5)
    assert pos.tolist() == [3] and neg.tolist() == [2]
