"""CIFAR-10 / CIFAR-100 read from small pickle batches written in the real format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from anomalib_firm.data import CIFAR10, CIFAR100
from anomalib_firm.data import cifar as cifar_module
from anomalib_firm.data.cifar import read_cifar_pickle


def test_cifar10_one_class(cifar10_root, writers):
    root, arrays = cifar10_root
    datamodule = CIFAR10(root=root, category="cat")
    datamodule.setup()
    assert datamodule.category == "cat"
    assert datamodule.normal_class_indices == [3]
    train = datamodule.train_data
    assert len(train) == 6
    assert train.images.shape == (6, 3, 32, 32)
    assert (writers.class_of(train.images.numpy()) == 3).all()
    # the training images are exactly the written images of the class
    written = arrays["train_images"][arrays["train_labels"] == 3]
    assert {image.tobytes() for image in train.images.numpy()} == {image.tobytes() for image in written}
    assert len(datamodule.test_data) + len(datamodule.val_data) == 50
    test = datamodule.test_data.samples
    cats = test.class_name == "cat"
    assert (test.label_index[cats] == 0).all()
    assert (test.label_index[~cats] == 1).all()


def test_cifar10_batch_values_match_files(cifar10_root, writers):
    root, arrays = cifar10_root
    datamodule = CIFAR10(root=root, category=0)
    datamodule.setup()
    batch = next(iter(datamodule.test_dataloader()))
    uint8 = (batch.image * 255).round().to(torch.uint8).numpy()
    labels = writers.class_of(uint8)
    assert (batch.gt_label.numpy() == (labels != 0)).all()
    # the position marker points back at the written test image
    positions = uint8[:, 0, 0, 1]
    assert (arrays["test_images"][positions] == uint8).all()


@pytest.mark.parametrize("category", ["cat", 3, "3", "Cat"])
def test_cifar10_category_by_name_or_index(cifar10_root, category):
    assert CIFAR10(root=cifar10_root[0], category=category).category == "cat"


def test_cifar10_several_normal_classes(cifar10_root):
    datamodule = CIFAR10(root=cifar10_root[0], category=["dog", "cat"])
    datamodule.setup()
    assert datamodule.category == "cat+dog"
    assert datamodule.normal_classes == ["cat", "dog"]
    assert datamodule.num_normal_classes == 2
    train = datamodule.train_data.samples
    assert len(train) == 12
    assert dict(zip(train.class_name, train.class_label, strict=True)) == {"cat": 0, "dog": 1}
    samples = datamodule.test_data.samples
    assert set(samples.class_name[samples.label_index == 0]) == {"cat", "dog"}
    assert samples.image_path.iloc[0].startswith("CIFAR10/cat+dog/test/")
    batch = datamodule.train_data.__getitems__(list(range(12)))
    assert sorted(batch.class_label.tolist()) == [0] * 6 + [1] * 6


def test_cifar10_root_may_be_the_batch_folder(cifar10_root):
    datamodule = CIFAR10(root=cifar10_root[0] / "cifar-10-batches-py", category="ship")
    datamodule.setup()
    assert len(datamodule.train_data) == 6


def test_cifar10_missing_files(tmp_path):
    datamodule = CIFAR10(root=tmp_path, category="cat")
    with pytest.raises(FileNotFoundError) as error:
        datamodule.setup()
    message = str(error.value)
    for expected in (
        "data_batch_1",
        "data_batch_5",
        "test_batch",
        str(tmp_path / "cifar-10-batches-py"),
        "download=True",
    ):
        assert expected in message


def test_cifar10_download_uses_the_standard_archive(tmp_path, monkeypatch, writers):
    calls = []

    def fake_download(url, download_root, filename, md5):
        calls.append((url, filename, md5))
        writers.write_cifar10(tmp_path / download_root)

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", fake_download)
    datamodule = CIFAR10(root=tmp_path, category=1, download=True)
    datamodule.prepare_data()
    datamodule.setup()
    assert calls == [
        (
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        )
    ]
    assert len(datamodule.train_data) == 6


def test_cifar100_uses_coarse_labels(cifar100_root, writers):
    root, _ = cifar100_root
    datamodule = CIFAR100(root=root, category="fish")
    datamodule.setup()
    assert len(datamodule.class_names) == 20
    assert datamodule.normal_class_indices == [1]
    assert len(datamodule.train_data) == 3
    assert (writers.class_of(datamodule.train_data.images.numpy()) == 1).all()
    assert len(datamodule.test_data) + len(datamodule.val_data) == 40
    assert CIFAR100(root=root, category=19).category == "vehicles_2"


def test_cifar100_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train, test in .*cifar-100-python.*download=True"):
        CIFAR100(root=tmp_path, category=0).setup()


def test_read_cifar_pickle_decodes_bytes_keys(tmp_path):
    path = tmp_path / "batch"
    with path.open("wb") as file:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), "labels": [0]}, file, protocol=2)
    assert sorted(read_cifar_pickle(path)) == ["data", "labels"]
    path.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="Cannot read CIFAR batch file"):
        read_cifar_pickle(path)
