"""ImageNet from the official archives a user downloaded after logging in (or from a mirror they can reach), laid out
the way the toolkit's three ImageNet readers read it, under one root::

    root/ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG       ILSVRC2012_img_train.tar (a tar of 1000 class tars)
    root/ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_<8 digits>.JPEG  ILSVRC2012_img_val.tar
    root/ILSVRC/Annotations/CLS-LOC/train/<wnid>/<wnid>_<n>.xml  ILSVRC2012_bbox_train_v2.tar.gz
    root/ILSVRC/Annotations/CLS-LOC/val/ILSVRC2012_val_<8 digits>.xml   ILSVRC2012_bbox_val_v3.tgz
    root/LOC_synset_mapping.txt                                  from the devkit's meta.mat (1000 leaf synsets)
    root/classification/train -> ../ILSVRC/Data/CLS-LOC/train   ImageFolder view for tools/train_cls.py
    root/classification/val/<wnid>/<image> -> the val image    labels: devkit ground truth, LOC CSV or val XMLs
    root/ILSVRC/{Data,Annotations,ImageSets}/DET/..., devkit/data/map_det.txt   the DET archive and its devkit

Kaggle's ``imagenet-object-localization-challenge.zip`` already holds ``ILSVRC/Data/CLS-LOC``, ``ILSVRC/Annotations``,
``ILSVRC/ImageSets`` and the ``LOC_*`` files: it is extracted as it is. A DET archive is re-rooted at its ``Data``,
``Annotations``, ``ImageSets`` and ``*devkit`` folders whatever its top folder is called (``ILSVRC2015/``,
``ILSVRC/``), so either release lands in ``root/ILSVRC``.

Each archive's kind comes from its name (:data:`ARCHIVES`) or, for another name, from its first members
(:func:`archive_kind`). MD5s: the three 2012 image/devkit archives have published ones (those torchvision's
``ImageNet`` dataset verifies); for the others none is published and they are not verified (a log line says so).
Work is resumable: a verified archive is not hashed again (``root/.prepare/<name>.verified`` holds size, mtime and
MD5), a fully extracted one is skipped (``.extracted``), the train tar skips classes already done and every archive
skips files already on disk with the right size.
"""

from __future__ import annotations

import logging
import os
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm import tqdm

from detection.data.errors import DatasetError
from detection.data.prepare import Archive, download, md5sum
from detection.devkit import read_loc_solution, read_loc_synset_mapping, read_pascal_xml

logger = logging.getLogger(__name__)

CLS_LOC = PurePosixPath("ILSVRC/Data/CLS-LOC")
BOXES = PurePosixPath("ILSVRC/Annotations/CLS-LOC")
STATE = ".prepare"  # markers of verified and extracted archives, finished train classes


@dataclass(frozen=True)
class ImagenetArchive:
    """An official archive: file ``name``, published ``md5`` (None: none published), ``kind`` (how it is laid out,
    see :func:`extract_archive`) and the ``parts`` of the layout it provides (``cls``, ``loc``, ``det``)."""

    name: str
    md5: str | None
    kind: str
    parts: tuple[str, ...]


ARCHIVES: list[ImagenetArchive] = [
    ImagenetArchive("ILSVRC2012_img_train.tar", "1d675b47d978889d74fa0da5fadfb00e", "train", ("cls", "loc")),
    ImagenetArchive("ILSVRC2012_img_val.tar", "29b22e2961454d5413ddabcf34fc5622", "val", ("cls", "loc")),
    ImagenetArchive("ILSVRC2012_devkit_t12.tar.gz", "fa75699e90414af021442c21a62c3abf", "devkit", ("cls", "loc")),
    ImagenetArchive("ILSVRC2012_bbox_train_v2.tar.gz", None, "bbox_train", ("loc",)),
    ImagenetArchive("ILSVRC2012_bbox_val_v3.tgz", None, "bbox_val", ("loc",)),
    ImagenetArchive("ILSVRC2017_DET.tar.gz", None, "layout", ("det",)),
    ImagenetArchive("ILSVRC2017_devkit.tar.gz", None, "layout", ("det",)),
]
KAGGLE = ImagenetArchive("imagenet-object-localization-challenge.zip", None, "layout", ("cls", "loc"))
KNOWN = {a.name: a for a in [*ARCHIVES, KAGGLE]}

# What each reader needs under the root; "a|b" is satisfied by either path.
PARTS: dict[str, list[str]] = {
    "cls": ["classification/train", "classification/val"],
    "loc": ["LOC_synset_mapping.txt", f"{CLS_LOC}/train", f"{CLS_LOC}/val",
            f"{BOXES}/train|LOC_train_solution.csv", f"{BOXES}/val|LOC_val_solution.csv"],
    "det": [f"ILSVRC/{p}" for p in ("Data/DET/train", "Data/DET/val", "Annotations/DET/train", "Annotations/DET/val",
                                    "ImageSets/DET/train.txt", "ImageSets/DET/val.txt", "devkit/data/map_det.txt")],
}  # fmt: skip
USE = {"cls": "tools/train_cls.py --dataset imagenet --data-root {root}/classification",
       "loc": "tools/train_loc.py rpn --data-root {root}",
       "det": "tools/train_det.py --dataset imagenet_det --data-root {root}"}


def missing_paths(root: Path, parts: tuple[str, ...] = tuple(PARTS)) -> dict[str, list[str]]:
    """Per part, the required paths (:data:`PARTS`) missing under ``root``; a part absent from the result is
    complete."""
    out = {}
    for part in parts:
        missing = [rel for rel in PARTS[part] if not any((root / alt).exists() for alt in rel.split("|"))]
        if missing:
            out[part] = missing
    return out


# ------------------------------------------------------------------------------------------- archive members
def _members(path: Path, progress: bool) -> Iterator[tuple[PurePosixPath, int, IO[bytes]]]:
    """``(name, size, file)`` for every regular file of a tar (any compression, streamed) or zip archive, with a
    progress bar over the archive's bytes."""
    total = path.stat().st_size
    with tqdm(total=total, unit="B", unit_scale=True, desc=path.name, disable=not progress) as bar:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if not info.is_dir():
                        with archive.open(info) as f:
                            yield PurePosixPath(info.filename), info.file_size, f
                    bar.update(info.compress_size)
            return
        with open(path, "rb") as raw, tarfile.open(fileobj=_Counting(raw, bar), mode="r|*") as archive:
            for member in archive:
                if member.isfile():
                    f = archive.extractfile(member)
                    assert f is not None  # a regular file always has one
                    yield PurePosixPath(member.name), member.size, f


class _Counting:
    """A read-only file that moves a progress bar by the bytes read (tarfile streams through it)."""

    def __init__(self, raw: IO[bytes], bar: tqdm) -> None:
        self.raw, self.bar = raw, bar

    def read(self, size: int = -1) -> bytes:
        block = self.raw.read(size)
        self.bar.update(len(block))
        return block


def _write(f: IO[bytes], size: int, dest: Path) -> None:
    """Copy a member to ``dest`` unless a file of that size is there (a resumed run); via ``.part`` + rename."""
    if dest.is_file() and dest.stat().st_size == size:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with open(part, "wb") as out:
        while block := f.read(1 << 20):
            out.write(block)
    os.replace(part, dest)


def _safe(archive: Path, name: PurePosixPath) -> PurePosixPath:
    if name.is_absolute() or ".." in name.parts:
        raise DatasetError(f"{archive}: member {str(name)!r} would be written outside the root; refused")
    return name


def _layout_destination(name: PurePosixPath) -> PurePosixPath | None:
    """Where a member of a Kaggle / DET / DET-devkit archive goes: re-rooted at ``ILSVRC/`` from its ``Data``,
    ``Annotations``, ``ImageSets`` or ``*devkit`` folder on; Kaggle's top-level ``LOC_*`` files to the root;
    anything else is not part of the layout (None)."""
    for i, part in enumerate(name.parts[:-1]):
        if part in ("Data", "Annotations", "ImageSets"):
            return PurePosixPath("ILSVRC", *name.parts[i:])
        if part.endswith("devkit"):
            return PurePosixPath("ILSVRC", "devkit", *name.parts[i + 1 :])
    return PurePosixPath(name.name) if name.name.startswith("LOC_") else None


def archive_kind(path: Path, look: int = 50) -> str:
    """An archive's kind from its first ``look`` file members: ``train`` (class tars), ``val`` (JPEGs at the top),
    ``devkit`` (the 2012 devkit's ``meta.mat``), ``layout`` (Data/Annotations/ImageSets/devkit folders, LOC files),
    ``bbox_train`` / ``bbox_val`` (XMLs)."""
    for i, (name, _, _) in enumerate(_members(path, progress=False)):
        if name.suffix == ".tar":
            return "train"
        if name.suffix == ".JPEG" and len(name.parts) == 1:
            return "val"
        if name.name == "meta.mat":
            return "devkit"
        if _layout_destination(name) is not None:
            return "layout"
        if name.suffix == ".xml":
            return "bbox_val" if name.name.startswith("ILSVRC2012_val_") else "bbox_train"
        if i + 1 >= look:
            break
    known = ", ".join(KNOWN)
    raise DatasetError(f"{path}: not an ImageNet archive this tool recognises (known: {known})")


def extract_archive(path: Path, kind: str, root: Path, *, progress: bool = True) -> None:
    """Extract one archive of ``kind`` into ``root`` (module docstring), skipping what is already there."""
    state = root / STATE
    if (state / f"{path.name}.extracted").exists():
        return
    done_classes = state / "train"
    for name, size, f in _members(path, progress):
        name = _safe(path, name)
        if kind == "train":  # a tar per class: <wnid>.tar holding <wnid>_<n>.JPEG
            wnid = name.name.removesuffix(".tar")
            if (done_classes / wnid).exists():
                continue
            with tarfile.open(fileobj=f, mode="r|*") as inner:
                for member in inner:
                    if member.isfile():
                        image = inner.extractfile(member)
                        assert image is not None
                        leaf = _safe(path, PurePosixPath(member.name)).name
                        _write(image, member.size, root / CLS_LOC / "train" / wnid / leaf)
            done_classes.mkdir(parents=True, exist_ok=True)
            (done_classes / wnid).touch()
        elif kind == "val":
            _write(f, size, root / CLS_LOC / "val" / name.name)
        elif kind == "bbox_train" and name.name.endswith((".tar", ".tar.gz", ".tgz")):  # a tar per class
            with tarfile.open(fileobj=f, mode="r|*") as inner:
                for member in inner:
                    xml = inner.extractfile(member) if member.isfile() else None
                    if xml is not None:
                        leaf = _safe(path, PurePosixPath(member.name)).name
                        _write(xml, member.size, root / BOXES / "train" / leaf.split("_")[0] / leaf)
        elif kind == "bbox_train":  # <wnid>/<wnid>_<n>.xml
            _write(f, size, root / BOXES / "train" / name.name.split("_")[0] / name.name)
        elif kind == "bbox_val":
            _write(f, size, root / BOXES / "val" / name.name)
        elif kind == "devkit":  # only what the layout is derived from (finish_layout)
            if name.name in ("meta.mat", "ILSVRC2012_validation_ground_truth.txt"):
                _write(f, size, state / "devkit" / name.name)
        elif kind == "layout":
            dest = _layout_destination(name)
            if dest is not None:
                _write(f, size, root / dest)
        else:
            raise ValueError(f"unknown archive kind {kind!r}")
    state.mkdir(parents=True, exist_ok=True)
    (state / f"{path.name}.extracted").touch()


# ------------------------------------------------------------------------------------------ derived files
def read_devkit_meta(path: Path) -> dict[int, tuple[str, str]]:
    """The devkit's ``meta.mat``: ``{ILSVRC2012_ID: (wnid, words)}`` of the 1000 leaf synsets (``num_children`` 0),
    as torchvision's ``ImageNet`` reads it (needs scipy)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError(f"{path}: reading the devkit's meta.mat needs scipy (pip install scipy)") from None
    synsets = loadmat(str(path), squeeze_me=True)["synsets"]
    return {int(s["ILSVRC2012_ID"]): (str(s["WNID"]), str(s["words"])) for s in synsets if int(s["num_children"]) == 0}


def val_labels(root: Path) -> dict[str, str]:
    """``{val image stem: wnid}`` from the devkit's ground truth (line ``i`` is image ``i``'s ILSVRC2012_ID), else
    Kaggle's ``LOC_val_solution.csv``, else the val XMLs; empty when none is there."""
    devkit = root / STATE / "devkit"
    if (devkit / "meta.mat").is_file() and (devkit / "ILSVRC2012_validation_ground_truth.txt").is_file():
        meta = read_devkit_meta(devkit / "meta.mat")
        truth = devkit / "ILSVRC2012_validation_ground_truth.txt"
        labels = {}
        for i, n in enumerate(truth.read_text().split(), start=1):
            if not n.isdigit() or int(n) not in meta:
                raise DatasetError(f"{truth}:{i}: {n!r} is not an ILSVRC2012_ID of a leaf synset in meta.mat")
            labels[f"ILSVRC2012_val_{i:08d}"] = meta[int(n)][0]
        return labels
    mapping = root / "LOC_synset_mapping.txt"
    index = {w: i for i, (w, _) in enumerate(read_loc_synset_mapping(mapping))} if mapping.is_file() else None
    if index is not None and (root / "LOC_val_solution.csv").is_file():
        solution = read_loc_solution(root / "LOC_val_solution.csv", index)
        return {image: objects[0][0] for image, objects in solution.items() if objects}
    xml_dir = root / BOXES / "val"
    if index is not None and xml_dir.is_dir():
        found = {p.stem: read_pascal_xml(p, index).objects for p in sorted(xml_dir.glob("*.xml"))}
        return {stem: objects[0].name for stem, objects in found.items() if objects}
    return {}


def finish_layout(root: Path) -> None:
    """Derive what the archives do not hold as such: ``LOC_synset_mapping.txt`` from the devkit (sorted by wnid, as
    Kaggle's and torchvision's ImageFolder order) and the classification view (``classification/train`` a link to
    the CLS-LOC train folder, ``classification/val/<wnid>/`` links to the val images)."""
    meta = root / STATE / "devkit" / "meta.mat"
    mapping = root / "LOC_synset_mapping.txt"
    if not mapping.exists() and meta.is_file():
        synsets = sorted(read_devkit_meta(meta).values())
        mapping.write_text("".join(f"{wnid} {words}\n" for wnid, words in synsets))
    train = root / "classification" / "train"
    if (root / CLS_LOC / "train").is_dir() and not train.exists():
        train.parent.mkdir(parents=True, exist_ok=True)
        train.symlink_to(Path("..") / CLS_LOC / "train", target_is_directory=True)
    images = root / CLS_LOC / "val"
    labels = val_labels(root) if images.is_dir() else {}
    for stem, wnid in labels.items():
        link = root / "classification" / "val" / wnid / f"{stem}.JPEG"
        if (images / link.name).is_file() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path("../../..") / CLS_LOC / "val" / link.name)


# ----------------------------------------------------------------------------------------------- the steps
def verify(path: Path, md5: str | None, root: Path) -> None:
    """Check ``path`` against its published MD5 once (remembered by size and mtime); no MD5: say it is unverified."""
    if md5 is None:
        logger.info("%s: no published checksum; not verified", path.name)
        return
    stat = path.stat()
    record = root / STATE / f"{path.name}.verified"
    stamp = f"{stat.st_size} {stat.st_mtime_ns} {md5}"
    if record.is_file() and record.read_text() == stamp:
        return
    logger.info("%s: checking its MD5 (%.1f GB; once)", path.name, stat.st_size / 1e9)
    got = md5sum(path)
    if got != md5:
        raise DatasetError(f"{path}: MD5 {got} does not match the published {md5} (a truncated or other file)")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(stamp)


def prepare_imagenet(
    root: Path,
    *,
    files: list[Path] | None = None,
    archives_dir: Path | None = None,
    base_url: str | None = None,
    names: list[str] | None = None,
    headers: dict[str, str] | None = None,
    parts: tuple[str, ...] = tuple(PARTS),
    keep_archives: bool = True,
    progress: bool = True,
) -> dict[str, list[str]]:
    """Verify and extract the ImageNet archives into ``root``; return :func:`missing_paths` afterwards.

    Sources: ``files`` (explicit paths, kind from the name or the content), ``archives_dir`` (the known archives
    of ``parts`` found there), or ``base_url`` (``names``, default the archives of ``parts``, downloaded resumably into
    ``root/downloads`` with ``headers`` such as a cookie; deleted after extraction unless ``keep_archives``).
    """
    if base_url is not None:
        wanted = names or [a.name for a in ARCHIVES if set(a.parts) & set(parts)]
        sources: list[Path | str] = [f"{base_url.rstrip('/')}/{name}" for name in wanted]
    else:
        sources = list(files or [])
        if archives_dir is not None:
            sources += [archives_dir / n for n, a in KNOWN.items()
                        if set(a.parts) & set(parts) and (archives_dir / n).is_file()]
        if not sources:
            raise DatasetError(f"no ImageNet archives given or found in {archives_dir}: expected some of "
                               f"{', '.join(KNOWN)}")
    for source in sources:  # one at a time, so that a download is extracted (and deleted) before the next
        name = source.rsplit("/", 1)[-1] if isinstance(source, str) else source.name
        known = KNOWN.get(name)
        if (root / STATE / f"{name}.extracted").exists():
            continue
        if isinstance(source, str):  # download() checks the published MD5 itself
            path = download(Archive(source, known.md5 if known else None), root / "downloads", progress=progress,
                            headers=headers)
        elif source.is_file():
            path = source
            verify(path, known.md5 if known else None, root)
        else:
            raise DatasetError(f"{source}: no such archive")
        extract_archive(path, known.kind if known else archive_kind(path), root, progress=progress)
        if isinstance(source, str) and not keep_archives:
            path.unlink()
    downloads = root / "downloads"
    if downloads.is_dir() and not any(downloads.iterdir()):
        downloads.rmdir()
    finish_layout(root)
    return missing_paths(root, parts)


def describe(missing: dict[str, list[str]], root: Path, parts: tuple[str, ...]) -> list[str]:
    """One line per part: complete (with the command that reads it) or the paths it still needs."""
    lines = []
    for part in parts:
        if part in missing:
            need = ", ".join(str(root / m).replace("|", f" or {root}/") for m in missing[part])
            lines.append(f"{part}: missing {need}")
        else:
            lines.append(f"{part}: complete ({USE[part].format(root=root)})")
    return lines

