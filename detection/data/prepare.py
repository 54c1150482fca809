"""Fetch the official dataset archives and lay them out the way the loaders read them; check an existing root.

- :data:`ARCHIVES`: each dataset's official archives with their published MD5 checksums (COCO 2017 from
  images.cocodataset.org; ``coco2014``: the 2014 train/val archives the paper trained on, which have no published
  checksum, plus Detectron's ``minival2014`` / ``valminusminival2014`` annotations, checked against the MD5 that
  MLPerf's download scripts list; PASCAL VOC 2007 trainval/test and 2012 trainval from host.robots.ox.ac.uk, the
  checksums torchvision's ``VOCDetection`` lists). ImageNet, distributed after a login, is
  detection/data/prepare_imagenet.py (from the archives a user downloaded, or a mirror, through :func:`download`).
- :func:`download`: resumable (an interrupted ``<name>.part`` continues with an HTTP ``Range`` request), with a
  tqdm progress bar, verified against the checksum before it is renamed into place.
- :func:`extract`: zip or tar into the root, refusing members that would land outside it; a marker file makes a
  second run skip archives already extracted.
- :data:`REQUIRED` / :func:`check_layout`: the paths each loader needs (docs/datasets.md), and which are missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from detection.data.errors import DatasetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """One downloadable file: its ``url``, published ``md5`` (None: none published, not verified) and the file name
    it is stored under."""

    url: str
    md5: str | None

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


_COCO = "http://images.cocodataset.org"
_DETECTRON = "https://dl.fbaipublicfiles.com/detectron"
_VOC = "http://host.robots.ox.ac.uk/pascal/VOC"
ARCHIVES: dict[str, list[Archive]] = {
    "coco": [
        Archive(f"{_COCO}/annotations/annotations_trainval2017.zip", "f4bbac642086de4f52a3fdda2de5fa2c"),
        Archive(f"{_COCO}/zips/val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80"),
        Archive(f"{_COCO}/zips/train2017.zip", "cced6f7f71b7629ddf16f17bbcfab6b2"),
    ],
    "coco2014": [
        Archive(f"{_COCO}/annotations/annotations_trainval2014.zip", None),
        Archive(f"{_DETECTRON}/coco/coco_annotations_minival.tgz", "2d2b9d2283adb5e3b8d25eec88e65064"),
        Archive(f"{_COCO}/zips/val2014.zip", None),
        Archive(f"{_COCO}/zips/train2014.zip", None),
    ],
    "voc": [
        Archive(f"{_VOC}/voc2007/VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64"),
        Archive(f"{_VOC}/voc2007/VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f"),
        Archive(f"{_VOC}/voc2012/VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd"),
    ],
}

# What the loaders read under --data-root (detection/data/coco.py, voc.py; ImageNet: prepare_imagenet.PARTS).
REQUIRED: dict[str, list[str]] = {
    "coco": ["annotations/instances_train2017.json", "annotations/instances_val2017.json", "train2017", "val2017"],
    "coco2014": [*(f"annotations/instances_{split}2014.json" for split in ("train", "val", "minival",
                                                                          "valminusminival")), "train2014", "val2014"],
    "voc": [f"VOCdevkit/VOC{year}/{part}" for year, parts in (
        ("2007", ("Annotations", "JPEGImages", "ImageSets/Main/trainval.txt", "ImageSets/Main/test.txt")),
        ("2012", ("Annotations", "JPEGImages", "ImageSets/Main/trainval.txt"))) for part in parts],
}  # fmt: skip


def check_layout(name: str, root: Path) -> list[str]:
    """The required paths of dataset ``name`` missing under ``root`` (empty when the root is complete)."""
    return [rel for rel in REQUIRED[name] if not (root / rel).exists()]


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(archive: Archive, folder: Path, *, progress: bool = True, timeout: float = 60.0,
             headers: dict[str, str] | None = None) -> Path:
    """``folder/<archive.name>``, downloaded unless a verified copy is there.

    A partial ``<name>.part`` from an interrupted run is continued with a ``Range`` request (restarted when the
    server ignores it). The complete file must match ``archive.md5``; otherwise it is deleted and a
    :class:`DatasetError` names both checksums (no published MD5: a complete download is kept as it is).
    ``headers`` go with every request (a mirror's ``Authorization`` or ``Cookie``). Network errors are a
    :class:`DatasetError` naming the URL; the partial file is kept for the next run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target, part = folder / archive.name, folder / f"{archive.name}.part"
    if target.is_file():
        if archive.md5 is None or md5sum(target) == archive.md5:
            return target
        logger.warning("%s does not match its published MD5 %s; downloading it again", target, archive.md5)
        target.unlink()
    start = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(archive.url, headers=dict(headers or {}))
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if start and response.status != 206:  # the server sent the whole file: start over
                start = 0
            total = response.headers.get("Content-Length")
            total = int(total) + start if total is not None else None
            with open(part, "ab" if start else "wb") as f, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, desc=archive.name, disable=not progress
            ) as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as exc:
        if not (exc.code == 416 and start):  # 416: nothing left after byte `start`; the part is complete
            raise DatasetError(f"downloading {archive.url} failed ({exc})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DatasetError(f"downloading {archive.url} failed ({exc}); run again to resume from "
                           f"{part.stat().st_size if part.exists() else 0} bytes") from None
    if archive.md5 is None:
        logger.info("%s has no published MD5: not verified", archive.name)
    got = md5sum(part) if archive.md5 is not None else None
    if got != archive.md5:
        part.unlink()
        raise DatasetError(f"{archive.url}: MD5 {got} does not match the published {archive.md5}; the download was "
                           "deleted (run again)")
    os.replace(part, target)
    return target


def extract(path: Path, root: Path) -> None:
    """Extract a zip or tar archive into ``root`` (once: ``root/.extracted_<name>`` marks it done). Members with
    absolute paths or ``..`` that would leave ``root`` are refused with a :class:`DatasetError`."""
    marker = root / f".extracted_{path.name}"
    if marker.exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    base = os.path.realpath(root)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                _check_member(path, base, member)
            archive.extractall(root)
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                _check_member(path, base, member.name)
                if member.issym() or member.islnk():
                    raise DatasetError(f"{path}: member {member.name!r} is a link; refused")
            archive.extractall(root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    else:
        raise DatasetError(f"{path} is neither a zip nor a tar archive")
    marker.touch()


def _check_member(archive: Path, base: str, member: str) -> None:
    where = os.path.realpath(os.path.join(base, member))
    if os.path.isabs(member) or not (where == base or where.startswith(base + os.sep)):
        raise DatasetError(f"{archive}: member {member!r} would be written outside {base}; refused")


# Files an archive may hold under another folder than the loaders read them from (Detectron's minival archive has
# been published with its JSONs at different depths): moved into place after extraction.
PLACED: dict[str, dict[str, str]] = {
    "coco2014": {f"instances_{split}2014.json": "annotations" for split in ("minival", "valminusminival")},
}


def place_files(name: str, root: Path) -> None:
    """Move the files :data:`PLACED` names for ``name`` into their folder under ``root`` when an archive put them
    elsewhere (searched three levels deep)."""
    for file_name, folder in PLACED.get(name, {}).items():
        target = root / folder / file_name
        if target.exists():
            continue
        found = sorted(p for depth in ("*", "*/*", "*/*/*") for p in root.glob(f"{depth}/{file_name}")
                       if "downloads" not in p.relative_to(root).parts)
        if found:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(found[0], target)
            logger.info("moved %s to %s", found[0], target)


def prepare(name: str, root: Path, *, archives: list[Archive] | None = None, keep_archives: bool = False,
            progress: bool = True) -> list[str]:
    """Download (resumably), verify and extract the archives of ``name`` into ``root``; return what is still
    missing from the layout afterwards (empty on success). Archives go to ``root/downloads`` and are deleted
    after extraction unless ``keep_archives``."""
    for archive in archives if archives is not None else ARCHIVES[name]:
        if (root / f".extracted_{archive.name}").exists():
            continue
        path = download(archive, root / "downloads", progress=progress)
        extract(path, root)
        if not keep_archives:
            path.unlink()
    place_files(name, root)
    if not keep_archives and (root / "downloads").is_dir() and not any((root / "downloads").iterdir()):
        shutil.rmtree(root / "downloads")
    return check_layout(name, root)
