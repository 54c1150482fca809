"""tools/prepare_dataset.py imagenet and detection.data.prepare_imagenet, offline: small archives in the official
formats (a tar of per-class tars, the flat val tar, the 2012 devkit with meta.mat and the val ground truth, bbox XML
tars, a DET tar and devkit, Kaggle's zip), from a folder and from a local HTTP server on 127.0.0.1; the resulting
root is read by the real loaders (ImageFolder for classification, CLS-LOC, ILSVRC DET)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from backbones.data import ImageFolderDataset
from detection.data import build_dataset
from detection.data.errors import DatasetError
from detection.data.prepare_imagenet import KNOWN, missing_paths, prepare_imagenet
from detection.localization.data import read_cls_loc

scipy_io = pytest.importorskip("scipy.io")  # meta.mat (the `imagenet` extra)

ROOT = Path(__file__).resolve().parents[3]
# ILSVRC2012_IDs on purpose not in wnid order: the devkit's ids, not the sorted order, label the val images.
SYNSETS = [(1, "n01443537", "goldfish, Carassius auratus"), (2, "n01440764", "tench, Tinca tinca")]
VAL = {1: "n01440764", 2: "n01443537", 3: "n01443537"}  # val image i -> its class


def tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def meta_mat() -> bytes:
    """The devkit's ``data/meta.mat``: a ``synsets`` struct array, leaves and one inner node (num_children > 0)."""
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    rows = [(i, w, words, 0) for i, w, words in SYNSETS] + [(1001, "n00001740", "entity", 2)]
    buffer = io.BytesIO()
    scipy_io.savemat(buffer, {"synsets": np.array(rows, dtype=fields)})
    return buffer.getvalue()


def imagenet_archives(write_image, pascal_xml, tmp_path: Path) -> dict[str, bytes]:  # noqa: ANN001 - fixtures
    jpeg = write_image(tmp_path / "x.jpg", 40, 50).read_bytes()
    xml = {w: pascal_xml(50, 40, [(w, 3, 4, 30, 35)]).encode() for _, w, _ in SYNSETS}
    ids = {w: i for i, w, _ in SYNSETS}
    train = {f"{w}.tar": tar_bytes({f"{w}_{n}.JPEG": jpeg for n in (1, 2)}) for _, w, _ in SYNSETS}
    det = {"ILSVRC/Data/DET/train/ILSVRC2013_train/n01440764/n01440764_9.JPEG": jpeg,
           "ILSVRC/Data/DET/val/ILSVRC2012_val_00000001.JPEG": jpeg,
           "ILSVRC/Annotations/DET/train/ILSVRC2013_train/n01440764/n01440764_9.xml": xml["n01440764"],
           "ILSVRC/Annotations/DET/val/ILSVRC2012_val_00000001.xml": xml["n01443537"],
           "ILSVRC/ImageSets/DET/train.txt": b"ILSVRC2013_train/n01440764/n01440764_9 1\n",
           "ILSVRC/ImageSets/DET/val.txt": b"ILSVRC2012_val_00000001 1\n"}
    return {
        "ILSVRC2012_img_train.tar": tar_bytes(train),
        "ILSVRC2012_img_val.tar": tar_bytes({f"ILSVRC2012_val_{i:08d}.JPEG": jpeg for i in VAL}),
        "ILSVRC2012_devkit_t12.tar.gz": tar_bytes({
            "ILSVRC2012_devkit_t12/COPYING": b"",
            "ILSVRC2012_devkit_t12/data/meta.mat": meta_mat(),
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt":
                "".join(f"{ids[w]}\n" for w in VAL.values()).encode()}, "w:gz"),
        "ILSVRC2012_bbox_train_v2.tar.gz": tar_bytes(  # boxes for 1 of 2 images a class; a folder, or a tar, a class
            {"n01440764/n01440764_1.xml": xml["n01440764"],
             "n01443537.tar.gz": tar_bytes({"n01443537/n01443537_1.xml": xml["n01443537"]}, "w:gz")}, "w:gz"),
        "ILSVRC2012_bbox_val_v3.tgz": tar_bytes({f"val/ILSVRC2012_val_{i:08d}.xml": xml[w] for i, w in VAL.items()},
                                                "w:gz"),
        "ILSVRC2017_DET.tar.gz": tar_bytes(det, "w:gz"),
        "ILSVRC2017_devkit.tar.gz": tar_bytes(
            {"ILSVRC2017_devkit/data/map_det.txt": b"n01440764 1 tench\nn01443537 2 goldfish\n"}, "w:gz"),
    }  # fmt: skip


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Make the generated 2012 archives' MD5s the "published" ones (the real ones are those of the real files)."""

    def use(archives: dict[str, bytes]) -> None:
        for name, data in archives.items():
            if KNOWN[name].md5 is not None:
                monkeypatch.setitem(KNOWN, name, replace(KNOWN[name], md5=hashlib.md5(data).hexdigest()))

    return use


def assert_read_by_the_loaders(root: Path) -> None:
    train = ImageFolderDataset(root / "classification" / "train", transform=None)
    val = ImageFolderDataset(root / "classification" / "val", transform=None)
    assert train.classes == ["n01440764", "n01443537"] and len(train.samples) == 4
    assert sorted((Path(p).stem, val.classes[c]) for p, c in val.samples) == [
        (f"ILSVRC2012_val_{i:08d}", w) for i, w in VAL.items()]
    loc_train, loc_val = read_cls_loc(root, "train"), read_cls_loc(root, "val")
    assert loc_train.wnids == ["n01440764", "n01443537"] and loc_train.names[0] == "tench, Tinca tinca"
    assert len(loc_train.records) == 2 and all(r.path.is_file() for r in loc_train.records)
    assert [loc_val.wnids[r.label] for r in loc_val.records] == list(VAL.values())
    det = build_dataset("imagenet_det", root, "train", None, train=True)
    assert det.wnids == ["n01440764", "n01443537"] and len(det) == 1
    assert len(build_dataset("imagenet_det", root, "val", None)) == 1


def test_prepare_from_a_folder_of_archives(write_image, pascal_xml, published, tmp_path: Path) -> None:  # noqa: ANN001
    archives = imagenet_archives(write_image, pascal_xml, tmp_path)
    published(archives)
    folder = tmp_path / "downloads"
    folder.mkdir()
    for name, data in archives.items():
        (folder / name).write_bytes(data)
    root = tmp_path / "imagenet"
    assert set(missing_paths(root)) == {"cls", "loc", "det"}
    assert prepare_imagenet(root, archives_dir=folder, progress=False) == {}
    assert_read_by_the_loaders(root)
    assert all((folder / name).is_file() for name in archives)  # the user's own archives are never deleted

    # Resumed after an interruption inside the train tar: done classes are skipped, the rest is extracted again.
    (root / ".prepare" / "ILSVRC2012_img_train.tar.extracted").unlink()
    (root / ".prepare" / "train" / "n01443537").unlink()
    lost = root / "ILSVRC/Data/CLS-LOC/train/n01443537/n01443537_2.JPEG"
    lost.unlink()
    kept = root / "ILSVRC/Data/CLS-LOC/train/n01440764/n01440764_1.JPEG"
    before = kept.stat().st_mtime_ns
    assert prepare_imagenet(root, archives_dir=folder, progress=False) == {}
    assert lost.is_file() and kept.stat().st_mtime_ns == before


def test_published_md5_mismatch_is_refused(tmp_path: Path) -> None:
    """The real ILSVRC2012_img_val.tar MD5 (torchvision's) against a file of that name that is something else."""
    fake = tmp_path / "ILSVRC2012_img_val.tar"
    fake.write_bytes(tar_bytes({"ILSVRC2012_val_00000001.JPEG": b"not the real archive"}))
    with pytest.raises(DatasetError, match="does not match the published 29b22e2961454d5413ddabcf34fc5622"):
        prepare_imagenet(tmp_path / "root", files=[fake], progress=False)
    assert not (tmp_path / "root" / "ILSVRC").exists()


def test_prepare_from_a_mirror_with_auth_header(  # noqa: ANN001 - fixtures
    serve, write_image, pascal_xml, published, tmp_path: Path
) -> None:
    archives = imagenet_archives(write_image, pascal_xml, tmp_path)
    published(archives)
    served = serve(archives)
    base = served.url("").rstrip("/")
    root = tmp_path / "imagenet"
    missing = prepare_imagenet(root, base_url=base, headers={"Authorization": "Bearer t0ken"}, progress=False,
                               keep_archives=False)
    assert missing == {} and not (root / "downloads").exists()
    assert sorted(name for name, _ in served.requests) == sorted(archives)
    assert all(h.get("Authorization") == "Bearer t0ken" for h in served.headers)
    assert_read_by_the_loaders(root)


def test_kaggle_zip_and_unknown_names_by_content(write_image, tmp_path: Path) -> None:  # noqa: ANN001
    """Kaggle's zip extracts as it is; val labels for the classification view come from LOC_val_solution.csv. A
    DET archive under another name (ILSVRC2015/ top folder) is recognised by its content and re-rooted."""
    jpeg = write_image(tmp_path / "x.jpg", 40, 50).read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("LOC_synset_mapping.txt", "n01440764 tench\nn01443537 goldfish\n")
        archive.writestr("LOC_train_solution.csv", "ImageId,PredictionString\nn01440764_1,n01440764 2 3 30 35 \n")
        archive.writestr("LOC_val_solution.csv",
                         "ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 2 3 30 35 \n")
        archive.writestr("ILSVRC/Data/CLS-LOC/train/n01440764/n01440764_1.JPEG", jpeg)
        archive.writestr("ILSVRC/Data/CLS-LOC/train/n01443537/n01443537_1.JPEG", jpeg)
        archive.writestr("ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG", jpeg)
    kaggle = tmp_path / "imagenet-object-localization-challenge.zip"
    kaggle.write_bytes(buffer.getvalue())
    det = tmp_path / "my_det_copy.tgz"
    det.write_bytes(tar_bytes({"ILSVRC2015/devkit/data/map_det.txt": b"n01440764 1 tench\n",
                               "ILSVRC2015/ImageSets/DET/val.txt": b"ILSVRC2012_val_00000001 1\n"}, "w:gz"))
    root = tmp_path / "imagenet"
    missing = prepare_imagenet(root, files=[kaggle, det], progress=False)
    assert "cls" not in missing and "loc" not in missing
    assert (root / "ILSVRC/devkit/data/map_det.txt").is_file() and (root / "ILSVRC/ImageSets/DET/val.txt").is_file()
    val = ImageFolderDataset(root / "classification" / "val", transform=None)
    assert val.classes == ["n01443537"] and len(val.samples) == 1
    assert len(read_cls_loc(root, "train").records) == 1


def test_tool_check_names_missing_parts_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module("tools.prepare_dataset")
    root = tmp_path / "imagenet"
    (root / "classification" / "train").mkdir(parents=True)
    (root / "classification" / "val").mkdir(parents=True)
    report = tmp_path / "check.json"
    argv = ["imagenet", "--data-root", str(root), "--check", "--parts", "cls,det", "--json", str(report)]
    assert module.main(argv) == 1
    out = capsys.readouterr()
    assert "cls: complete (tools/train_cls.py --dataset imagenet" in out.out
    assert f"det: missing {root}/ILSVRC/Data/DET/train" in out.err and "devkit/data/map_det.txt" in out.err
    result = json.loads(report.read_text())
    assert result["complete"] is False and list(result["missing"]) == ["det"]
    assert module.main(["imagenet", "--data-root", str(root), "--check", "--parts", "cls"]) == 0
    assert module.main(["imagenet", "--data-root", str(root), "--archives", str(tmp_path / "empty")]) == 1
    assert "no ImageNet archives given or found" in capsys.readouterr().err


def test_members_that_escape_the_root_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "ILSVRC2012_bbox_val_v3.tgz"  # no published MD5: extracted without a checksum
    evil.write_bytes(tar_bytes({"val/../../../outside.xml": b"x"}, "w:gz"))
    with pytest.raises(DatasetError, match="outside the root; refused"):
        prepare_imagenet(tmp_path / "root", files=[evil], progress=False)
    assert not list(tmp_path.rglob("outside.xml"))
