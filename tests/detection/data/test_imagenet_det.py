import pytest
import torch

from detection.data import DatasetError, ImageNetDetDataset, ImageNetDetection, build_dataset, build_transforms


def test_val_split_classes_ids_and_boxes(ilsvrc_root):
    ds = ImageNetDetection(ilsvrc_root, "val")
    assert ds.classes == ["accordion", "airplane", "ant"]
    assert ds.wnids == ["n02672831", "n02691156", "n02219486"]
    assert ds.label_to_class_index == {1: 1, 2: 2, 3: 3}
    assert len(ds) == 3
    image, target = ds[1]
    assert image.shape == (3, 50, 40)
    assert target["image_id"] == 2 and target["labels"].tolist() == [3]
    torch.testing.assert_close(target["boxes"], torch.tensor([[1.0, 1, 22, 30]]))  # xmin 2 -> 1
    assert "difficult" not in target
    assert ds.image_info(0)["file_name"] == "ILSVRC2012_val_00000001.JPEG"


def test_train_single_file_form_and_empty_images(ilsvrc_root):
    assert len(ImageNetDetection(ilsvrc_root / "ILSVRC", "train", train=False)) == 2
    train = build_dataset("imagenet_det", ilsvrc_root, "", build_transforms(True, (20,), 100), train=True)
    assert len(train) == 1  # the image without objects is not a training sample
    _, target = train[0]
    assert target["image_id"] == 1


def test_val1_val2_from_imagesets_or_files(ilsvrc_root, tmp_path):
    assert [ImageNetDetection(ilsvrc_root, "val1").image_info(i)["image_id"] for i in range(2)] == [1, 3]
    assert len(ImageNetDetection(ilsvrc_root, "val2")) == 1
    custom = tmp_path / "my_val2.txt"
    custom.write_text("ILSVRC2012_val_00000003 3\nILSVRC2012_val_00000001 1\n")
    ds = ImageNetDetection(ilsvrc_root, "val2", val2_file=custom)
    assert [ds.image_info(i)["image_id"] for i in range(2)] == [3, 1]
    union = ImageNetDetDataset(ilsvrc_root, "train+val1", train=True)
    assert len(union) == 3 and union.classes == ds.classes


def test_bad_inputs(ilsvrc_root):
    sets = ilsvrc_root / "ILSVRC" / "ImageSets" / "DET"
    (sets / "val2.txt").write_text("ILSVRC2012_val_00000099 9\n")
    with pytest.raises(DatasetError, match=r"names 'ILSVRC2012_val_00000099' but its annotation .* is missing"):
        ImageNetDetection(ilsvrc_root, "val2")
    (sets / "val2.txt").write_text("")
    with pytest.raises(DatasetError, match=r"val2.txt: split file is empty"):
        ImageNetDetection(ilsvrc_root, "val2")
    (sets / "val2.txt").write_text("../../../../../etc/passwd 1\n")
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        ImageNetDetection(ilsvrc_root, "val2")
    with pytest.raises(DatasetError, match=r"Data/DET/test is missing"):  # test: images only, for the server
        ImageNetDetection(ilsvrc_root, "test")
    (ilsvrc_root / "ILSVRC/Data/DET/test").mkdir()
    with pytest.raises(DatasetError, match=r"ImageSets/DET/test.txt is missing"):
        ImageNetDetection(ilsvrc_root, "test")
    xml = ilsvrc_root / "ILSVRC/Annotations/DET/val/ILSVRC2012_val_00000001.xml"
    xml.write_text(xml.read_text().replace("n02219486", "n99999999"))
    with pytest.raises(DatasetError, match=r"unknown class name 'n99999999'; known: n02219486, n02672831"):
        ImageNetDetection(ilsvrc_root, "val")
    (ilsvrc_root / "ILSVRC/devkit/data/map_det.txt").unlink()
    with pytest.raises(DatasetError, match=r"expected path .*devkit/data/map_det.txt is missing"):
        ImageNetDetection(ilsvrc_root, "val")
