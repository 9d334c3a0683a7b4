"""Digits: scikit-learn's bundled 8x8 digits, fixed stratified 50/50 split."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

from anomalib_firm.data import Digits
from anomalib_firm.data.digits import split_digits, write_digits_folder


def test_split_sizes_and_stratification():
    labels = load_digits().target
    train, test = split_digits(labels)
    assert (len(train), len(test)) == (896, 901)
    assert not set(train) & set(test)
    assert len(set(train) | set(test)) == 1797
    train_counts = np.bincount(labels[train], minlength=10)
    test_counts = np.bincount(labels[test], minlength=10)
    assert (np.abs(train_counts - test_counts) <= 1).all()
    assert (train_counts > 0).all()


def test_split_is_fixed():
    labels = load_digits().target
    first, second = split_digits(labels), split_digits(labels)
    assert np.array_equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])


def test_data_module_sizes_and_labels():
    datamodule = Digits(category=3)
    datamodule.setup()
    labels = load_digits().target
    train, _ = split_digits(labels)
    assert len(datamodule.train_data) == (labels[train] == 3).sum() == 91
    assert len(datamodule.test_data) + len(datamodule.val_data) == 901
    assert set(datamodule.train_data.samples.class_name) == {"3"}


def test_test_split_is_the_same_for_every_category_and_seed():
    def test_images(category, seed):
        datamodule = Digits(category=category, seed=seed, val_split_mode="none")
        datamodule.setup()
        return datamodule.test_data.images

    assert torch.equal(test_images(0, 0), test_images(7, 3))


def test_grey_levels_are_scaled_to_uint8():
    datamodule = Digits(category=0)
    datamodule.setup()
    images = datamodule.test_data.images
    assert images.dtype == torch.uint8
    assert images.shape == (901, 1, 8, 8)
    assert int(images.min()) == 0
    assert int(images.max()) == 255
    digits = load_digits()
    _, test = split_digits(digits.target)
    expected = np.rint(digits.images[test] * 255 / 16).astype(np.uint8)
    assert np.array_equal(images[:, 0].numpy(), expected)


def test_batches_have_three_channels():
    datamodule = Digits(category="7", train_batch_size=32)
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.image.shape == (32, 3, 8, 8)
    assert float(batch.image.max()) <= 1.0
    assert (batch.class_label == 0).all()


def test_folder_tree_holds_the_data_modules_images(tmp_path):
    counts = write_digits_folder(tmp_path, digit=3, size=8)
    datamodule = Digits(category=3, val_split_mode="none")
    datamodule.setup()
    train = datamodule.train_data
    assert counts["train/good"] == len(train)
    written = np.stack([np.array(Image.open(path)) for path in sorted((tmp_path / "train/good").glob("*.png"))])
    assert np.array_equal(written, train.images[:, 0].numpy())  # the same images as Digits(category=3), same order
    normal_test = int((datamodule.test_data.samples.label_index == 0).sum())
    assert counts == {"train/good": len(train), "test/good": normal_test, "test/bad": 2 * normal_test}
    assert all("_digit3" not in path.name for path in (tmp_path / "test/bad").iterdir())
    small = write_digits_folder(tmp_path / "small", digit=3, size=8, num_train=5, num_test=4, anomalies_per_normal=1)
    assert small == {"train/good": 5, "test/good": 4, "test/bad": 4}
