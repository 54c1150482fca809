"""tools/prepare_dataset.py and detection.data.prepare, offline: small archives in the real layouts served by a
local HTTP server on 127.0.0.1 (Range requests, so resuming is exercised), checksums, extraction, --check."""

from __future__ import annotations

import importlib.util
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from detection.data import build_dataset
from detection.data.errors import DatasetError
from detection.data.prepare import REQUIRED, Archive, check_layout, download, extract, prepare

ROOT = Path(__file__).resolve().parents[3]


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def voc_archives(write_image, pascal_xml, tmp_path: Path) -> dict[str, bytes]:  # noqa: ANN001 - conftest fixtures
    """Three tars shaped like the official ones: VOCdevkit/VOC<year>/... with one image each."""
    image = write_image(tmp_path / "x.jpg", 40, 50).read_bytes()
    xml = pascal_xml(50, 40, [("dog", 2, 3, 30, 35)]).encode()

    def year(y: str, split: str, stem: str) -> dict[str, bytes]:
        base = f"VOCdevkit/VOC{y}"
        return {f"{base}/JPEGImages/{stem}.jpg": image, f"{base}/Annotations/{stem}.xml": xml,
                f"{base}/ImageSets/Main/{split}.txt": f"{stem}\n".encode()}  # fmt: skip

    return {"VOCtrainval_06-Nov-2007.tar": tar_bytes(year("2007", "trainval", "000001")),
            "VOCtest_06-Nov-2007.tar": tar_bytes(year("2007", "test", "000002")),
            "VOCtrainval_11-May-2012.tar": tar_bytes(year("2012", "trainval", "2008_000001"))}  # fmt: skip


def test_prepare_voc_from_a_local_server_gives_a_loadable_root(  # noqa: ANN001 - fixtures
    serve, write_image, pascal_xml, tmp_path: Path
) -> None:
    served = serve(voc_archives(write_image, pascal_xml, tmp_path))
    root = tmp_path / "voc"
    assert check_layout("voc", root) == REQUIRED["voc"]
    missing = prepare("voc", root, archives=[served.archive(n) for n in served.files], progress=False)
    assert missing == []
    assert not (root / "downloads").exists()  # archives removed after extraction
    assert len(build_dataset("voc", root, "07+12", None)) == 2 and len(build_dataset("voc", root, "test", None)) == 1
    served.requests.clear()
    assert prepare("voc", root, archives=[served.archive(n) for n in served.files], progress=False) == []
    assert served.requests == []  # extracted once: nothing fetched again


def test_download_resumes_and_verifies_the_checksum(serve, tmp_path: Path) -> None:  # noqa: ANN001
    payload = bytes(range(256)) * 4000
    served = serve({"data.zip": payload})
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "data.zip.part").write_bytes(payload[:1000])  # an interrupted earlier run
    path = download(served.archive("data.zip"), folder, progress=False)
    assert path.read_bytes() == payload and served.requests == [("data.zip", "bytes=1000-")]
    assert not (folder / "data.zip.part").exists()
    assert download(served.archive("data.zip"), folder, progress=False) == path and len(served.requests) == 1

    path.rename(folder / "data.zip.part")  # killed after the last byte, before the rename
    assert download(served.archive("data.zip"), folder, progress=False).read_bytes() == payload
    assert served.requests[-1] == ("data.zip", f"bytes={len(payload)}-")  # answered 416: nothing left to fetch

    wrong = Archive(served.url("data.zip"), "0" * 32)
    with pytest.raises(DatasetError, match="does not match the published 0{32}"):
        download(wrong, tmp_path / "other", progress=False)
    assert not any((tmp_path / "other").iterdir())  # the bad download is not kept
    with pytest.raises(DatasetError, match="missing.zip failed"):
        download(Archive(served.url("missing.zip"), "0" * 32), tmp_path / "other", progress=False)


def test_archives_that_escape_the_root_are_refused(tmp_path: Path) -> None:
    (tmp_path / "evil.zip").write_bytes(zip_bytes({"../outside.txt": b"x"}))
    with pytest.raises(DatasetError, match="outside"):
        extract(tmp_path / "evil.zip", tmp_path / "root")
    assert not (tmp_path / "outside.txt").exists()
    (tmp_path / "coco.zip").write_bytes(zip_bytes({"annotations/instances_val2017.json": b"{}"}))
    extract(tmp_path / "coco.zip", tmp_path / "root")
    assert (tmp_path / "root" / "annotations" / "instances_val2017.json").is_file()


def test_check_names_every_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module("tools.prepare_dataset")
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    assert module.main(["coco", "--root", str(root), "--check"]) == 1
    err = capsys.readouterr().err
    assert "missing 3 of the 4" in err and str(root / "annotations/instances_train2017.json") in err
    assert str(root / "val2017") not in err  # present
    assert module.main(["imagenet", "--root", str(tmp_path / "ilsvrc")]) == 1  # --root: the old spelling
    err = capsys.readouterr().err
    assert "image-net.org" in err and "--archives DIR" in err


def coco2014_archives(write_image, tmp_path: Path) -> dict[str, bytes]:  # noqa: ANN001 - conftest fixture
    """The four archives of ``coco2014`` shaped like the real ones: the official annotation zip and image zips,
    and Detectron's minival archive with its JSONs one folder deeper than the loaders read them."""
    import json

    image = write_image(tmp_path / "x.jpg", 40, 50).read_bytes()
    categories = [{"id": 1, "name": "person"}]

    def instances(ids: list[int], folder: str) -> bytes:
        return json.dumps({
            "images": [{"id": i, "file_name": f"COCO_{folder}_{i:012d}.jpg", "height": 40, "width": 50} for i in ids],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 0,
                             "area": 400} for i in ids],
            "categories": categories}).encode()  # fmt: skip

    return {
        "annotations_trainval2014.zip": zip_bytes({"annotations/instances_train2014.json": instances([1], "train2014"),
                                                   "annotations/instances_val2014.json": instances([2, 3], "val2014")}),
        "coco_annotations_minival.tgz": tar_bytes({
            "coco_annotations_minival/instances_minival2014.json": instances([2], "val2014"),
            "coco_annotations_minival/instances_valminusminival2014.json": instances([3], "val2014")}),
        "val2014.zip": zip_bytes({f"val2014/COCO_val2014_{i:012d}.jpg": image for i in (2, 3)}),
        "train2014.zip": zip_bytes({"train2014/COCO_train2014_000000000001.jpg": image}),
    }  # fmt: skip


def test_prepare_coco2014_places_detectrons_minival_and_trains_on_the_paper_union(  # noqa: ANN001 - fixtures
    serve, write_image, tmp_path: Path
) -> None:
    served = serve(coco2014_archives(write_image, tmp_path))
    root = tmp_path / "coco"
    missing = prepare("coco2014", root, archives=[served.archive(n) for n in served.files], progress=False)
    assert missing == []
    assert (root / "annotations" / "instances_minival2014.json").is_file()  # moved from the archive's own folder
    union = build_dataset("coco", root, "train2014+valminusminival2014", None, train=True)
    assert len(union) == 2
    assert len(build_dataset("coco", root, "minival2014", None)) == 1  # its images are read from val2014/
