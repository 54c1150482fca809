"""Training on several splits: one spelling rule for every dataset, and the check that the parts are disjoint.

A split spec names one split or a union: a ``+``-joined string (COCO ``"train2014+valminusminival2014"``, VOC
``"2007_trainval+2012_trainval"``, ILSVRC DET ``"train+val1"``) or, in a config, a list of split names
(``data.train_split: [train2014, valminusminival2014]``), which means the same. A dataset may name a union with an
alias that is expanded first (VOC's ``"07+12"`` and ``"07++12"``, the paper's spellings).

The parts of a union must not share an image: training on ``val2014 + minival2014`` (or on COCO 2017 train plus
2014 val) would train on the images it is later scored on. :func:`check_disjoint` finds such images by each
part's ``image_key`` (the image file; a COCO image id for COCO's own splits) and names both parts.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol

from detection.data.errors import DatasetError

__all__ = ["SEPARATOR", "check_disjoint", "join_splits", "split_parts"]

SEPARATOR = "+"


def join_splits(spec: str | Sequence[str]) -> str:
    """A split spec as one string: a list ``["train2014", "val2014"]`` → ``"train2014+val2014"``; a string is
    returned unchanged."""
    if isinstance(spec, str):
        return spec
    parts = [str(part) for part in spec]
    if not parts or not all(parts):
        raise DatasetError(f"split list {list(spec)!r} has an empty name; give split names such as ['train2014', "
                           f"'valminusminival2014']")
    return SEPARATOR.join(parts)


def split_parts(spec: str | Sequence[str], aliases: Mapping[str, str] | None = None) -> list[str]:
    """The split names of a spec, in order: ``"train2014+val2014"`` → ``["train2014", "val2014"]``; an alias
    (``aliases["07++12"]``) is expanded first. An empty name (``"train2014+"``) is a :class:`DatasetError`."""
    joined = join_splits(spec)
    joined = (aliases or {}).get(joined, joined)
    parts = joined.split(SEPARATOR)
    if not all(parts):
        raise DatasetError(f"split spec {joined!r} has an empty split name; join names with a single "
                           f"{SEPARATOR!r} (e.g. 'train2014{SEPARATOR}valminusminival2014')")
    return parts


class _Part(Protocol):
    description: str

    def __len__(self) -> int: ...

    def image_key(self, index: int) -> Hashable: ...


def check_disjoint(parts: Sequence[_Part], hint: str = "") -> None:
    """Raise a :class:`DatasetError` naming two parts of a union that share images (by ``image_key``), with how
    many they share and a few of them; ``hint`` is appended (what to train on instead)."""
    owner: dict[Hashable, int] = {}
    for j, part in enumerate(parts):
        shared: dict[int, list[Hashable]] = {}
        for i in range(len(part)):
            first = owner.setdefault(part.image_key(i), j)
            if first != j:
                shared.setdefault(first, []).append(part.image_key(i))
        for first, keys in shared.items():
            examples = ", ".join(str(k) for k in keys[:3]) + (", …" if len(keys) > 3 else "")
            raise DatasetError(f"{parts[first].description} and {part.description} share {len(keys)} "
                               f"image{'s' if len(keys) > 1 else ''} "
                               f"(e.g. {examples}): an image may be in only one split of a training union{hint}")
