import pickle

import torch

from detection.data import collate


def test_collate_keeps_lists_and_drops_none():
    a = (torch.zeros(3, 4, 5), {"image_id": 1})
    b = (torch.zeros(3, 6, 2), {"image_id": 2})
    images, targets = collate([a, None, b, None])
    assert [im.shape for im in images] == [(3, 4, 5), (3, 6, 2)]
    assert [t["image_id"] for t in targets] == [1, 2]
    assert targets.num_skipped == 2
    assert pickle.loads(pickle.dumps(targets)).num_skipped == 2  # survives DataLoader workers


def test_collate_all_none():
    images, targets = collate([None])
    assert images == [] and targets == [] and targets.num_skipped == 1
