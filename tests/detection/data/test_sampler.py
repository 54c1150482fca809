from collections import Counter

import pytest

from detection.data import GroupedBatchSampler


class Sizes:
    """image_info only: 7 landscape (even ids up to 12) and 6 portrait images."""

    def __init__(self) -> None:
        self.infos = [(40, 60) if i % 2 == 0 else (60, 40) for i in range(13)]

    def __len__(self) -> int:
        return len(self.infos)

    def image_info(self, i: int) -> dict:
        h, w = self.infos[i]
        return {"height": h, "width": w, "file_name": f"{i}.jpg", "image_id": i}


def test_batches_come_from_one_group_and_cover_everything():
    sampler = GroupedBatchSampler(Sizes(), 3, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5  # ceil(7/3) + ceil(6/3)
    for batch in batches:
        assert len(batch) == 3 and len({i % 2 for i in batch}) == 1
    assert set(i for b in batches for i in b) == set(range(13))


def test_deterministic_per_seed_and_epoch():
    a, b = GroupedBatchSampler(Sizes(), 2, seed=1), GroupedBatchSampler(Sizes(), 2, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)


def test_shards_are_disjoint_equal_length_and_group_aligned():
    ds = Sizes()
    shards = [list(GroupedBatchSampler(ds, 2, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(GroupedBatchSampler(ds, 2, rank=1, world_size=2)) == 4
    for b0, b1 in zip(*shards):
        assert {i % 2 for i in b0 + b1} in ({0}, {1})  # same group at every step on every rank
    counts = Counter(i for shard in shards for b in shard for i in b)
    assert set(counts) == set(range(13))  # every image seen; padding repeats a few
    single = Counter(i for b in GroupedBatchSampler(ds, 4, seed=3) for i in b)
    assert sum(single.values()) == sum(counts.values())


def test_drop_last_and_arguments():
    sampler = GroupedBatchSampler(Sizes(), 3, seed=0, drop_last=True)
    assert len(list(sampler)) == len(sampler) == 4
    with pytest.raises(ValueError):
        GroupedBatchSampler(Sizes(), 2, rank=2, world_size=2)
