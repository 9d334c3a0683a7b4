"""Common behaviour of the in-memory one-vs-rest data modules, checked on Digits (no files needed)."""

from __future__ import annotations

import copy
import types
from pathlib import Path

import pytest
import torch
from anomalib.data import ImageBatch
from anomalib.data.utils import random_split
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import Resize

from anomalib_firm.data import Digits
from anomalib_firm.data.batch import OneVsRestImageBatch, OneVsRestImageItem
from anomalib_firm.data.class_names import resolve_classes
from anomalib_firm.data.dataset import InMemoryImageDataset, collate_batch

NAMES = ["tshirt_top", "trouser", "ankle_boot"]


@pytest.fixture(scope="module")
def digits() -> Digits:
    datamodule = Digits(category=[5, "3"])
    datamodule.setup()
    return datamodule


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        ("trouser", [1]),
        (2, [2]),
        ("2", [2]),
        (["ankle_boot", 0], [0, 2]),
        ("ankle_boot+tshirt_top", [0, 2]),
        ("T-shirt/top", [0]),
        ("Ankle boot", [2]),
        ([1, "trouser", 1], [1]),
    ],
)
def test_resolve_classes(category, expected):
    assert resolve_classes(category, NAMES, "Fashion") == expected


@pytest.mark.parametrize("category", ["sock", 3, -1, True, [], "trouser+sock"])
def test_resolve_classes_rejects_unknown(category):
    with pytest.raises(ValueError, match=r"tshirt_top|No normal class") as error:
        resolve_classes(category, NAMES, "Fashion")
    if category != []:
        assert "0='tshirt_top', 1='trouser', 2='ankle_boot'" in str(error.value)


def test_unknown_category_of_data_module():
    with pytest.raises(ValueError, match=r"Unknown class 'eleven' for Digits\. Valid classes"):
        Digits(category="eleven")


def test_category_attributes(digits):
    assert digits.category == "3+5"
    assert digits.normal_classes == ["3", "5"]
    assert digits.num_normal_classes == 2
    assert digits.class_names == [str(d) for d in range(10)]
    assert digits.name == "Digits"


def test_train_holds_normal_classes_only(digits):
    samples = digits.train_data.samples
    assert set(samples.class_name) == {"3", "5"}
    assert (samples.label_index == 0).all()
    assert set(samples.class_label) == {0, 1}
    assert (samples.class_label == samples.class_name.map({"3": 0, "5": 1})).all()


def test_test_split_is_whole_test_set(digits):
    test = digits.test_data.samples
    val = digits.val_data.samples
    assert len(test) + len(val) == 901
    both = [*test.image_path, *val.image_path]
    assert len(set(both)) == 901  # validation was removed from the test set
    for samples in (test, val):
        normal = samples.class_name.isin(["3", "5"])
        assert (samples.label_index == (~normal).astype(int)).all()
        assert (samples.class_label[~normal] == -1).all()
        assert set(samples.class_label[normal]) == {0, 1}


def test_val_split_is_label_aware(digits):
    val = digits.val_data.samples
    counts = val.label_index.value_counts()
    normal_test = (digits.test_data.samples.label_index == 0).sum() + counts[0]
    assert counts[0] == pytest.approx(0.2 * normal_test, abs=1)
    assert counts[1] == pytest.approx(0.2 * (901 - normal_test), abs=1)


def test_pseudo_paths(digits):
    paths = list(digits.test_data.samples.image_path)
    assert all(path.startswith("Digits/3+5/test/") and path.endswith(".png") for path in paths)
    assert paths == sorted(paths)
    assert digits.test_data.samples.image_path.str.len().nunique() == 1  # zero-padded index


def test_getitems_gathers_a_batch(digits):
    dataset = digits.test_data
    batch = dataset.__getitems__([0, 5, 7])
    assert type(batch) is OneVsRestImageBatch
    assert batch.image.shape == (3, 3, 8, 8)
    assert batch.image.dtype == torch.float32
    rows = dataset.samples.iloc[[0, 5, 7]]
    expected = dataset.images[torch.tensor(rows["index"].to_numpy())].float() / 255
    assert torch.equal(batch.image, expected.expand(-1, 3, -1, -1))
    assert batch.gt_label.tolist() == rows.label_index.astype(bool).tolist()
    assert batch.class_label.dtype == torch.int64
    assert batch.class_label.tolist() == rows.class_label.tolist()
    assert batch.image_path == rows.image_path.tolist()


def test_getitem_returns_an_item(digits):
    dataset = digits.train_data
    item = dataset[4]
    assert type(item) is OneVsRestImageItem
    batch = dataset.__getitems__([4])
    assert torch.equal(item.image, batch.image[0])
    assert item.class_label == batch.class_label[0]
    assert item.image_path == batch.image_path[0]
    assert torch.equal(dataset[-1].image, dataset[len(dataset) - 1].image)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_dataloader_uses_getitems_and_passes_batch_through(digits, monkeypatch):
    def no_single_items(self, index):
        raise AssertionError("the loader must not fetch images one by one")

    monkeypatch.setattr(InMemoryImageDataset, "__getitem__", no_single_items)
    loader = digits.train_dataloader()
    batches = list(loader)
    assert sum(len(batch) for batch in batches) == len(digits.train_data)
    assert all(type(batch) is OneVsRestImageBatch for batch in batches)
    batch = batches[0]
    assert collate_batch(batch) is batch
    assert isinstance(batch, ImageBatch)


def test_collate_of_items(digits):
    items = [digits.test_data[i] for i in range(4)]
    batch = digits.test_data.collate_fn(items)
    assert type(batch) is OneVsRestImageBatch
    assert torch.equal(batch.class_label, digits.test_data.__getitems__([0, 1, 2, 3]).class_label)
    assert [item.class_label for item in batch] == [item.class_label for item in items]


def test_loader_with_worker_process(digits):
    loader = DataLoader(digits.val_data, batch_size=50, num_workers=1, collate_fn=digits.val_data.collate_fn)
    batches = list(loader)
    assert sum(len(batch) for batch in batches) == len(digits.val_data)
    assert batches[0].class_label is not None


def test_augmentations_run_on_the_whole_batch():
    datamodule = Digits(category=1, augmentations=Resize((16, 16)))
    datamodule.setup()
    batch = next(iter(datamodule.test_dataloader()))
    assert batch.image.shape[1:] == (3, 16, 16)
    assert datamodule.test_data[0].image.shape == (3, 16, 16)


def test_subsets_share_the_image_tensor(digits):
    test, val = digits.test_data, digits.val_data
    assert val.store is test.store
    assert val.images.data_ptr() == test.images.data_ptr()
    assert copy.deepcopy(test).images.data_ptr() == test.images.data_ptr()
    sub = test.subsample([0, 1, 2])
    assert sub.images.data_ptr() == test.images.data_ptr()
    assert len(sub) == 3
    first, second = random_split(test, 0.5, label_aware=True, seed=1)
    assert first.store is second.store is test.store
    assert len(first + second) == len(test)
    assert torch.equal((first + second)[0].image, test[0].image)


def test_subsets_of_different_splits_do_not_concatenate(digits):
    with pytest.raises(TypeError, match="same in-memory split"):
        digits.train_data + digits.test_data


def test_splits_are_deterministic():
    def val_paths(seed):
        datamodule = Digits(category=2, seed=seed)
        datamodule.setup()
        return list(datamodule.val_data.samples.image_path)

    assert val_paths(0) == val_paths(0)
    assert val_paths(0) != val_paths(1)


def test_setup_again_reuses_loaded_images(digits):
    images = digits.test_data.images
    val_paths = list(digits.val_data.samples.image_path)
    digits.setup()
    assert digits.test_data.images is images
    assert list(digits.val_data.samples.image_path) == val_paths


def test_changing_category_reloads():
    datamodule = Digits(category=0)
    datamodule.setup()
    datamodule.category = "9"
    datamodule.setup()
    assert set(datamodule.train_data.samples.class_name) == {"9"}
    assert datamodule.category == "9"


def test_val_split_same_as_test_and_none():
    same = Digits(category=0, val_split_mode="same_as_test")
    same.setup()
    assert len(same.val_data) == len(same.test_data) == 901
    assert same.val_data.store is same.test_data.store
    none = Digits(category=0, val_split_mode="none")
    none.setup()
    assert len(none.test_data) == 901


@pytest.mark.parametrize(("argument", "mode"), [("val_split_mode", "synthetic"), ("test_split_mode", "synthetic")])
def test_unsupported_split_modes(argument, mode):
    with pytest.raises(ValueError, match="not supported for in-memory data"):
        Digits(category=0, **{argument: mode})


def test_memory_accounting(digits):
    expected = digits.train_data.images.numel() + digits.test_data.images.numel()
    assert digits.image_memory_bytes == expected
    assert digits.test_data.images.shape == (901, 1, 8, 8)  # grey: one channel in memory


def test_visualizer_finds_in_memory_images(digits, tmp_path):
    from anomalib.visualization import ImageVisualizer

    from anomalib_firm.data.image_store import original_image
    from anomalib_firm.data.visualization import InMemoryImageVisualizer

    dataset = digits.test_data
    row = dataset.samples.iloc[10]
    image = original_image(row.image_path)
    assert torch.equal(image, dataset.images[row["index"]].float().div(255).expand(3, -1, -1))
    assert original_image("Digits/3+5/test/0/99999.png") is None
    assert original_image("elsewhere/a.png") is None

    batch = dataset.__getitems__([10, 11, 12])
    visualizer = InMemoryImageVisualizer(fields=["image"], overlay_fields=[], text_config={"enable": False})
    trainer = types.SimpleNamespace(default_root_dir=tmp_path, datamodule=digits)
    visualizer.on_predict_batch_end(trainer, None, batch, batch, 0)
    saved = sorted(path.relative_to(tmp_path / "images") for path in tmp_path.rglob("*.png"))
    assert saved == sorted(Path(path).relative_to("Digits/3+5") for path in batch.image_path)
    with pytest.raises(FileNotFoundError):  # what anomalib's own visualizer does with a pseudo path
        ImageVisualizer(fields=["image"]).on_test_batch_end(trainer, None, batch, batch, 0)


def test_creating_a_data_set_replaces_nothing_of_anomalib():
    from anomalib.visualization.image import item_visualizer, visualizer

    before = visualizer.visualize_image_item
    assert before is item_visualizer.visualize_image_item  # anomalib's own function, never wrapped
    datamodule = Digits(category=1)
    datamodule.setup()
    assert datamodule.test_data.samples.image_path.iloc[0].startswith("Digits/")  # in-memory pseudo paths
    assert visualizer.visualize_image_item is before
