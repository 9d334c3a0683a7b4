"""ClassFolder: any ``<folder>/<class>/<images>`` tree, written as PNGs with PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anomalib_firm.data import ClassFolder


def test_one_root_split_by_ratio(tmp_path, writers):
    written = writers.write_class_tree(tmp_path, {"circle": 10, "square": 10, "triangle": 5})
    datamodule = ClassFolder(root=tmp_path, category="square", val_split_mode="none")
    datamodule.setup()
    assert datamodule.class_names == ["circle", "square", "triangle"]
    assert datamodule.category == "square"
    train = datamodule.train_data
    assert len(train) == 8
    assert len(datamodule.test_data) == 2 + 2 + 1
    # items keep their real source file as path; the images are the decoded files
    for row in train.samples.itertuples():
        assert Path(row.image_path).is_file()
        index = int(Path(row.image_path).stem)
        assert np.array_equal(train.images[row.index].permute(1, 2, 0).numpy(), written["square"][index])
    test = datamodule.test_data.samples
    assert set(test.class_name[test.label_index == 0]) == {"square"}


def test_root_split_is_seeded_and_independent_of_category(tmp_path, writers):
    writers.write_class_tree(tmp_path, {"a": 10, "b": 10})

    def test_paths(category, seed):
        datamodule = ClassFolder(root=tmp_path, category=category, seed=seed, val_split_mode="none")
        datamodule.setup()
        return sorted(datamodule.test_data.samples.image_path)

    assert test_paths("a", 0) == test_paths("b", 0)
    assert test_paths("a", 1) != test_paths("a", 0)


def test_train_and_test_folders(tmp_path, writers):
    writers.write_class_tree(tmp_path / "train", {"good": 4, "other": 3})
    writers.write_class_tree(tmp_path / "test", {"good": 2, "other": 2, "scratch": 3})
    datamodule = ClassFolder(root=tmp_path, train_dir="train", test_dir="test", category="good", val_split_mode="none")
    datamodule.setup()
    assert datamodule.class_names == ["good", "other", "scratch"]
    assert len(datamodule.train_data) == 4
    test = datamodule.test_data.samples
    assert len(test) == 7
    assert (test.label_index == (test.class_name != "good")).all()


def test_several_normal_classes(tmp_path, writers):
    writers.write_class_tree(tmp_path, {"a": 5, "b": 5, "c": 5})
    datamodule = ClassFolder(root=tmp_path, category="c+a")
    datamodule.setup()
    assert datamodule.normal_classes == ["a", "c"]
    batch = datamodule.train_data.__getitems__(list(range(len(datamodule.train_data))))
    assert sorted(set(batch.class_label.tolist())) == [0, 1]


def test_image_size_resizes_mixed_sizes(tmp_path, writers):
    rng = np.random.default_rng(0)
    writers.write_png(tmp_path / "a" / "small.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    writers.write_png(tmp_path / "a" / "wide.png", rng.integers(0, 256, (10, 20, 3), dtype=np.uint8))
    writers.write_png(tmp_path / "b" / "big.png", rng.integers(0, 256, (30, 30, 3), dtype=np.uint8))
    writers.write_png(tmp_path / "b" / "big2.png", rng.integers(0, 256, (30, 30, 3), dtype=np.uint8))
    datamodule = ClassFolder(root=tmp_path, category="a", image_size=(12, 16), train_ratio=0.5, val_split_mode="none")
    datamodule.setup()
    assert datamodule.train_data.images.shape[1:] == (3, 12, 16)
    assert datamodule.test_data.images.shape == (2, 3, 12, 16)
    square = ClassFolder(root=tmp_path, category="a", image_size=6, train_ratio=0.5, val_split_mode="none")
    square.setup()
    assert square.test_data.images.shape[2:] == (6, 6)


def test_mixed_sizes_without_image_size_is_an_error(tmp_path, writers):
    writers.write_png(tmp_path / "a" / "0.png", np.zeros((8, 8, 3), np.uint8))
    writers.write_png(tmp_path / "a" / "1.png", np.zeros((9, 8, 3), np.uint8))
    writers.write_png(tmp_path / "a" / "2.png", np.zeros((8, 8, 3), np.uint8))
    datamodule = ClassFolder(root=tmp_path, category="a", train_ratio=0.99)
    with pytest.raises(ValueError, match=r"1\.png' is 8x9 .*pass image_size"):
        datamodule.setup()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA"])
def test_grey_palette_and_alpha_images_become_rgb(tmp_path, writers, mode):
    rng = np.random.default_rng(1)
    for index in range(4):
        writers.write_png(tmp_path / "a" / f"{index}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), mode=mode)
        writers.write_png(tmp_path / "b" / f"{index}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    datamodule = ClassFolder(root=tmp_path, category="a", train_ratio=0.5, val_split_mode="none")
    datamodule.setup()
    images = datamodule.train_data.images
    assert images.shape == (2, 3, 8, 8)
    if mode in {"L", "LA"}:
        assert torch.equal(images[:, 0], images[:, 1])
        assert torch.equal(images[:, 0], images[:, 2])


def test_corrupt_image_names_the_file(tmp_path, writers):
    writers.write_class_tree(tmp_path, {"a": 3, "b": 3})
    corrupt = tmp_path / "b" / "001.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    datamodule = ClassFolder(root=tmp_path, category="a", train_ratio=0.5)
    with pytest.raises(ValueError, match=f"Cannot read image file '{corrupt}'"):
        datamodule.setup()


def test_empty_class_folder_names_the_folder(tmp_path, writers):
    writers.write_class_tree(tmp_path, {"a": 3})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    datamodule = ClassFolder(root=tmp_path, category="a")
    with pytest.raises(ValueError, match=f"Class folder '{tmp_path / 'empty'}' holds no image file"):
        datamodule.setup()


def test_missing_folders_are_named(tmp_path, writers):
    with pytest.raises(FileNotFoundError, match=f"Folder '{tmp_path / 'nowhere'}' does not exist"):
        ClassFolder(root=tmp_path / "nowhere")
    writers.write_class_tree(tmp_path / "train", {"good": 2})
    writers.write_class_tree(tmp_path / "test", {"good": 2, "bad": 2})
    with pytest.raises(FileNotFoundError, match=f"Folder '{tmp_path / 'tset'}' does not exist"):
        ClassFolder(root=tmp_path, train_dir="train", test_dir="tset")
    datamodule = ClassFolder(root=tmp_path, train_dir="train", test_dir="test", category="bad")
    with pytest.raises(FileNotFoundError, match=f"Class folder '{tmp_path / 'train' / 'bad'}' does not exist"):
        datamodule.setup()


def test_unknown_class_and_bad_arguments(tmp_path, writers):
    writers.write_class_tree(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(ValueError, match=r"Unknown class 'c' for ClassFolder\. Valid classes .*0='a', 1='b'"):
        ClassFolder(root=tmp_path, category="c")
    with pytest.raises(ValueError, match="both train_dir and test_dir"):
        ClassFolder(root=tmp_path, train_dir="a")
    with pytest.raises(ValueError, match="train_ratio"):
        ClassFolder(root=tmp_path, train_ratio=1.0)
    assert ClassFolder(root=tmp_path, name="Shapes", category=1).name == "Shapes"
