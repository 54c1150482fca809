import logging
import math
from collections import Counter

import numpy as np
import pytest
import torch

from detection.data import GroupedBatchSampler
from detection.data.base import Annotation
from detection.data.sampler import RepeatFactorSampler, build_train_sampler, image_classes, repeat_factors


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


# --- repeat-factor sampling (LVIS, Gupta et al. 2019) ----------------------------------------------------------


class Labelled(Sizes):
    """Sizes plus annotation(i): class 1 in every image but the last (empty); class 2 in image 0 only."""

    def annotation(self, i: int) -> Annotation:
        labels = [] if i == 12 else [1, 2] if i == 0 else [1, 1]
        return Annotation(np.zeros((len(labels), 4), np.float32), np.array(labels, np.int64))


def test_repeat_factors_follow_the_lvis_rule():
    # 10 images: class 1 in all (f = 1), class 2 in one (f = 0.1); t = 0.4 → r(2) = sqrt(0.4 / 0.1) = 2, r(1) = 1
    assert repeat_factors([{1, 2}] + [{1}] * 9, 0.4) == pytest.approx([2.0] + [1.0] * 9)
    # f(1) = 2/3, f(2) = 1/3; an image without objects keeps 1
    assert repeat_factors([{1, 2}, {1}, set()], 0.9) == pytest.approx([math.sqrt(2.7), math.sqrt(1.35), 1.0])
    assert image_classes(Labelled())[:2] == [{1, 2}, {1}] and image_classes(Labelled())[12] == set()


def test_repeat_factor_epochs_round_stochastically_and_are_deterministic():
    factors = [1.0] * 13
    factors[3] = 2.5
    sampler = RepeatFactorSampler(Sizes(), 2, factors=factors, seed=7)
    for epoch in range(20):
        sampler.set_epoch(epoch)
        assert len(list(sampler)) == len(sampler)
        assert {i for batch in sampler for i in batch} == set(range(13))
    epochs = []
    for epoch in range(200):
        sampler.set_epoch(epoch)
        epochs.append(int(sampler.epoch_indices(torch.Generator().manual_seed(7 * 100_003 + epoch)).eq(3).sum()))
    assert set(epochs) == {2, 3} and abs(sum(epochs) / len(epochs) - 2.5) < 0.1
    resumed = RepeatFactorSampler(Sizes(), 2, factors=factors, seed=7)  # a resumed run: same epoch, same batches
    resumed.set_epoch(5)
    sampler.set_epoch(5)
    assert list(resumed) == list(sampler)
    other = RepeatFactorSampler(Sizes(), 2, factors=factors, seed=8)
    other.set_epoch(5)
    assert list(other) != list(sampler)


def test_repeat_factor_ranks_take_disjoint_slices_of_the_same_global_batches():
    factors = [1.0 + (i % 3) * 0.7 for i in range(13)]
    ranks = [RepeatFactorSampler(Sizes(), 2, factors=factors, seed=3, rank=r, world_size=2) for r in (0, 1)]
    single = RepeatFactorSampler(Sizes(), 4, factors=factors, seed=3)
    for sampler in (*ranks, single):
        sampler.set_epoch(2)
    steps = list(zip(*ranks))
    assert len(steps) == len(ranks[0]) == len(ranks[1]) == len(single)
    assert [a + b for a, b in steps] == list(single)  # the one-worker run's batches, split between the ranks
    for a, b in steps:
        assert len({i % 2 for i in a + b}) == 1  # one aspect group per step


def test_build_train_sampler_picks_by_name_and_logs_the_epoch_size(caplog: pytest.LogCaptureFixture):
    grouped = build_train_sampler(Labelled(), kind="grouped", batch_size=3, seed=0, rank=0, world_size=1)
    assert type(grouped) is GroupedBatchSampler
    assert list(grouped) == list(GroupedBatchSampler(Sizes(), 3, seed=0))  # the default order is unchanged
    with caplog.at_level(logging.INFO):
        repeat = build_train_sampler(Labelled(), kind="repeat_factor", batch_size=3, seed=0, rank=0, world_size=1,
                                     repeat_threshold=0.5)
    # class 2 in 1 of 13 images: r = sqrt(0.5 · 13) ≈ 2.55 for image 0, 1 for the others
    assert repeat.expected_epoch_size == pytest.approx(12 + math.sqrt(6.5))
    assert f"an epoch is {12 + math.sqrt(6.5):.1f} images on average (13 distinct; 1 with a factor above 1" \
        in caplog.text
    with pytest.raises(ValueError, match="unknown sampler"):
        build_train_sampler(Labelled(), kind="uniform", batch_size=3, seed=0, rank=0, world_size=1)
