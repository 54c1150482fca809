from pathlib import Path

import numpy as np
import pytest
import torch

from detection.data import DatasetError, VOCDataset, VOCDetection, build_dataset, build_transforms, resolve_split
from detection.data.voc import parse_split_spec
from detection.devkit import VOC_CLASSES


def test_eval_split_converts_one_based_boxes_and_keeps_difficult(voc_root):
    ds = VOCDetection(voc_root(), "2007", "trainval", train=False)
    assert ds.classes == list(VOC_CLASSES) and len(ds) == 3
    assert ds.image_names() == ["000001", "000002", "000005"]
    assert ds.year_dir == voc_root() / "VOCdevkit" / "VOC2007"
    image, target = ds[0]
    assert image.shape == (3, 60, 80)
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0, 20, 30], [10, 20, 50, 40]]))
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1]
    assert target["difficult"].tolist() == [False, True]
    assert target["image_id"] == 0
    info = ds.image_info(1)
    assert info == {"height": 40, "width": 30, "file_name": "000002.jpg", "image_id": 1}
    # cat 5,6,25,35 in a 30x40 image
    torch.testing.assert_close(ds[1][1]["boxes"], torch.tensor([[4.0, 5, 25, 35]]))


def test_train_mode_drops_difficult_and_emptied_images(voc_root):
    ds = VOCDetection(voc_root(), "2007", "trainval", train=True)
    assert [ds.image_info(i)["image_id"] for i in range(len(ds))] == [0, 1]  # 000005 had only a difficult object
    assert ds[0][1]["difficult"].tolist() == [False]
    assert len(VOCDetection(voc_root(), "2007", "trainval", train=True, keep_difficult=True)) == 3


def test_paper_unions(voc_root):
    root = voc_root()
    u = VOCDataset(root, "07+12", train=False)
    assert len(u) == 4 and u.classes == list(VOC_CLASSES)
    assert [(d.year, d.split) for d in u.datasets] == [("2007", "trainval"), ("2012", "trainval")]
    assert [u.image_info(i)["image_id"] for i in range(4)] == [0, 1, 2, 3]  # unique across parts
    _, target = u[3]
    assert target["image_id"] == 3 and target["labels"].tolist() == [VOC_CLASSES.index("bus") + 1]
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0, 70, 45]]))
    assert u.locate(3)[1] == 0
    uu = VOCDataset(root, "07++12", train=False)
    assert [(d.year, d.split) for d in uu.datasets] == [("2007", "trainval"), ("2007", "test"), ("2012", "trainval")]
    assert len(uu) == 5
    for evaluated_alone in (uu.image_names, lambda: uu.use_07_metric):
        with pytest.raises(DatasetError, match="evaluate one at a time"):
            evaluated_alone()


def test_metric_follows_the_devkit_year(voc_root):
    root = voc_root()
    assert VOCDataset(root, "2007_test").use_07_metric  # 11-point AP
    assert not VOCDataset(root, "2012_trainval").use_07_metric  # VOC2010 on: area AP
    assert VOCDetection(root, "2012", "trainval").use_07_metric is False


def test_default_splits(voc_root):
    assert resolve_split("voc", "", train=True) == "trainval" and resolve_split("voc", train=False) == "test"
    assert resolve_split("voc", "", "2007_val", "2012_val", train=False) == "2007_val"  # first non-empty one
    assert parse_split_spec(voc_root(), "trainval") == [("2007", "trainval"), ("2012", "trainval")]
    assert parse_split_spec(voc_root(), "test") == [("2007", "test")]
    train = build_dataset("voc", voc_root(), "", build_transforms(True, (32,), 100), train=True)
    assert [(d.year, d.split) for d in train.datasets] == [("2007", "trainval"), ("2012", "trainval")]
    assert len(train) == 3  # difficult-only image dropped in training
    test = build_dataset("voc", voc_root(), "", build_transforms(False))
    assert test.image_names() == ["000009"] and test.split == "test"
    assert test.year_dir.name == "VOC2007"


def test_default_splits_single_year(tmp_path, voc_root):
    root = voc_root(years=("2007",))
    assert parse_split_spec(root, "trainval") == [("2007", "trainval")]
    assert len(build_dataset("voc", root / "VOCdevkit", "2007_test", None)) == 1


def test_train_mode_is_an_argument_not_read_from_the_transforms(voc_root):
    assert len(build_dataset("voc", voc_root(), "2007_trainval", build_transforms(True, (32,), 100))) == 3
    assert len(build_dataset("voc", voc_root(), "2007_trainval", None, train=True)) == 2


def _write(root: Path, rel: str, text: str) -> None:
    (root / "VOCdevkit" / "VOC2007" / rel).write_text(text)


def test_bad_split_specs_and_layouts(tmp_path, voc_root):
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset("voc", tmp_path / "missing", "", None)
    root = voc_root(years=("2007",))
    with pytest.raises(DatasetError, match="not '<year>_<split>'"):
        VOCDataset(root, "2007test")
    with pytest.raises(DatasetError, match="VOC2012 does not exist"):
        VOCDataset(root, "2012_trainval")
    with pytest.raises(DatasetError, match=r"val.txt: split file not found"):
        VOCDetection(root, "2007", "val")
    (root / "VOCdevkit/VOC2007/JPEGImages").rename(root / "VOCdevkit/VOC2007/images")
    with pytest.raises(DatasetError, match=r"expected path .*VOC2007/JPEGImages is missing"):
        VOCDetection(root, "2007", "test")


@pytest.mark.parametrize(
    "split_text, match",
    [
        ("\n\n", r"trainval.txt: split file is empty"),
        ("000001\n000404\n", r"names '000404' but its annotation .*000404.xml is missing"),
        ("../../../../etc/passwd\n", "escapes the dataset root"),
    ],
)
def test_bad_split_files(voc_root, split_text, match):
    root = voc_root(years=("2007",))
    _write(root, "ImageSets/Main/trainval.txt", split_text)
    with pytest.raises(DatasetError, match=match):
        VOCDetection(root, "2007", "trainval")


def test_split_naming_missing_image(voc_root):
    root = voc_root(years=("2007",))
    (root / "VOCdevkit/VOC2007/JPEGImages/000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"names '000002' but its image .*000002.jpg is missing"):
        VOCDetection(root, "2007", "trainval")


@pytest.mark.parametrize(
    "xml, match",
    [
        ("<annotation><size><width>5", r"000001.xml:1: malformed XML \(.*line 1"),
        ("<annotation><object/></annotation>", r"000001.xml: missing or invalid <size>"),
        ('<annotation><size><width>80</width><height>60</height></size><object><name>unicorn</name>'
         "<bndbox><xmin>1</xmin></bndbox></object></annotation>",
         r"000001.xml: object 0 \(unicorn\): unknown class name 'unicorn'; known: aeroplane, bicycle"),
        ("<annotation><size><width>80</width><height>60</height></size><object><name>dog</name><bndbox>"
         "<xmin>1</xmin><ymin>nan</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>",
         r"000001.xml: object 0 \(dog\): coordinate ymin='nan' is not finite"),
        ("<annotation><size><width>80</width><height>60</height></size><object><name>dog</name><bndbox>"
         "<xmin>one</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>",
         r"000001.xml: object 0 \(dog\): coordinate xmin='one' is not a number"),
    ],
)
def test_bad_xml(voc_root, xml, match):
    root = voc_root(years=("2007",))
    _write(root, "Annotations/000001.xml", xml)
    with pytest.raises(DatasetError, match=match):
        VOCDetection(root, "2007", "trainval")


def test_clipping_and_degenerate_boxes(voc_root, pascal_xml, caplog):
    root = voc_root(years=("2007",))
    objects = [("dog", -5, 3, 100, 70), ("cat", 10, 10, 9, 20), ("bird", 85, 5, 90, 9)]
    _write(root, "Annotations/000001.xml", pascal_xml(80, 60, objects))
    _, target = VOCDetection(root, "2007", "trainval", train=False)[0]
    np.testing.assert_allclose(target["boxes"].numpy(), [[0, 2, 80, 60]])  # clipped
    assert "000001.xml: object 1 (cat) has zero or negative width/height" in caplog.text
    assert "object 2 (bird)" in caplog.text  # entirely outside the 80-px-wide image


def own_voc_folder(root: Path, write_image, pascal_xml) -> Path:  # noqa: ANN001 - conftest helpers
    """A VOC-format folder of our own: no VOC<year> level, a PNG image, classes.txt with 2 classes."""
    for sub in ("Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    write_image(root / "JPEGImages" / "a.png", 30, 40)
    write_image(root / "JPEGImages" / "b.jpg", 40, 30, seed=1)
    (root / "Annotations" / "a.xml").write_text(pascal_xml(40, 30, [("kiwi", 1, 1, 20, 20), ("fig", 5, 5, 9, 9, 1)]))
    (root / "Annotations" / "b.xml").write_text(pascal_xml(30, 40, [("fig", 2, 2, 10, 10)]))
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("b\n")
    (root / "classes.txt").write_text("# my fruit\nfig\nkiwi\n\n")
    return root


def test_own_voc_folder_without_a_year(tmp_path, write_image, pascal_xml):
    root = own_voc_folder(tmp_path / "fruit", write_image, pascal_xml)
    ds = build_dataset("voc", root, "train+val", None)
    assert ds.classes == ["fig", "kiwi"] and len(ds) == 2 and ds.datasets[0].year == ""
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and target["labels"].tolist() == [2, 1]
    assert ds.datasets[0].image_info(0)["file_name"] == "a.png"
    single = build_dataset("voc", root, "val", None)
    assert single.split == "val" and not single.use_07_metric  # own data: the area AP
    assert build_dataset("voc", root, "val", None, classes=["kiwi", "fig"]).classes == ["kiwi", "fig"]
    with pytest.raises(DatasetError, match="unknown class name 'fig'"):
        build_dataset("voc", root, "val", None, classes=["kiwi"])
    (root / "classes.txt").write_text("fig\nfig\n")
    with pytest.raises(DatasetError, match="classes.txt: class names repeated: fig"):
        build_dataset("voc", root, "val", None)


def test_a_year_folder_as_the_root_keeps_its_metric(voc_root):
    ds = build_dataset("voc", voc_root() / "VOCdevkit" / "VOC2007", "test", None)
    assert ds.classes == list(VOC_CLASSES) and ds.use_07_metric and len(ds) == 1
