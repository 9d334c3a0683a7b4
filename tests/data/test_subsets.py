"""max_train_images / max_test_images: seeded, stratified, the same at every set-up."""

from __future__ import annotations

import collections

import pytest

from anomalib_firm.data import Digits


def test_subsets_are_stratified_and_reproducible():
    datamodule = Digits(category=0, max_train_images=50, max_test_images=300, val_split_mode="none")
    datamodule.setup()
    assert len(datamodule.train_data) == 50
    assert len(datamodule.test_data) == 300
    counts = collections.Counter(datamodule.test_data.samples["class_index"].tolist())
    assert set(counts) == set(range(10))
    assert max(counts.values()) - min(counts.values()) <= 2  # Digits' test classes are nearly balanced
    again = Digits(category=0, max_train_images=50, max_test_images=300, val_split_mode="none")
    again.setup()
    assert again.test_data.samples["image_path"].tolist() == datamodule.test_data.samples["image_path"].tolist()
    assert again.train_data.samples["image_path"].tolist() == datamodule.train_data.samples["image_path"].tolist()


def test_validation_is_carved_from_the_subset():
    datamodule = Digits(category=0, max_test_images=300, val_split_ratio=0.2)
    datamodule.setup()
    assert len(datamodule.test_data) + len(datamodule.val_data) == 300
    test_paths = set(datamodule.test_data.samples["image_path"])
    assert test_paths.isdisjoint(datamodule.val_data.samples["image_path"])


def test_invalid_limits():
    with pytest.raises(ValueError, match="max_test_images"):
        Digits(category=0, max_test_images=0)
