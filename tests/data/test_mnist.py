"""MNIST / Fashion-MNIST read from small idx files (``.gz`` and plain) written in the real format."""

from __future__ import annotations

import pytest
import torch

from anomalib_firm.data import MNIST, FashionMNIST
from anomalib_firm.data import mnist as mnist_module
from anomalib_firm.data.mnist import read_idx


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """Point the Debian fallback at an empty folder (the real package may be installed)."""
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_files_in_root(tmp_path, writers, gz):
    arrays = writers.write_mnist(tmp_path, gz=gz)
    datamodule = MNIST(root=tmp_path, category=7)
    datamodule.setup()
    train = datamodule.train_data
    assert train.images.shape == (5, 1, 28, 28)  # grey: one channel in memory
    assert (writers.class_of(train.images.numpy()) == 7).all()
    assert len(datamodule.test_data) + len(datamodule.val_data) == 40
    written = arrays["train_images"][arrays["train_labels"] == 7]
    assert torch.equal(train.images[:, 0], torch.from_numpy(written))
    batch = datamodule.train_data.__getitems__([0, 1])
    assert batch.image.shape == (2, 3, 28, 28)
    assert torch.equal(batch.image[:, 0], batch.image[:, 2])


def test_mnist_torchvision_layout(tmp_path, writers):
    writers.write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    datamodule = MNIST(root=tmp_path, category=["1", 2])
    datamodule.setup()
    assert datamodule.category == "1+2"
    assert len(datamodule.train_data) == 10
    assert set(datamodule.train_data.samples.class_label) == {0, 1}


def test_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        MNIST(root=tmp_path, category=0).setup()
    message = str(error.value)
    for expected in (
        "train-images-idx3-ubyte[.gz]",
        "t10k-labels-idx1-ubyte[.gz]",
        str(tmp_path / "MNIST" / "raw"),
        "download=True",
    ):
        assert expected in message


def test_mnist_download_uses_standard_files(tmp_path, monkeypatch, writers):
    source = tmp_path / "source"
    writers.write_mnist(source)
    calls = []

    def fake_download(url, root, filename, md5):
        calls.append((url, md5))
        (tmp_path / root).mkdir(parents=True, exist_ok=True)
        (tmp_path / root / filename).write_bytes((source / filename).read_bytes())

    monkeypatch.setattr(mnist_module, "download_url", fake_download)
    datamodule = MNIST(root=tmp_path / "data", category=0, download=True)
    datamodule.setup()
    assert len(datamodule.train_data) == 5
    assert (tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()
    assert calls[0] == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    )
    assert len(calls) == 4


def test_fashion_mnist_names(tmp_path, writers, no_debian):
    writers.write_mnist(tmp_path / "FashionMNIST" / "raw")
    assert FashionMNIST(root=tmp_path, category="T-shirt/top").category == "tshirt_top"
    assert FashionMNIST(root=tmp_path, category=["Ankle boot", "sneaker"]).category == "sneaker+ankle_boot"
    with pytest.raises(ValueError, match="'sock' for FashionMNIST"):
        FashionMNIST(root=tmp_path, category="sock")


def test_fashion_mnist_falls_back_to_debian_package(tmp_path, writers, monkeypatch):
    debian = tmp_path / "usr-share"
    writers.write_mnist(debian)
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST", debian)
    datamodule = FashionMNIST(root=tmp_path / "empty", category="bag")
    datamodule.setup()
    assert len(datamodule.train_data) == 5
    # files in root win over the package
    writers.write_mnist(tmp_path / "mine", train_per_class=2)
    mine = FashionMNIST(root=tmp_path / "mine", category="bag")
    mine.setup()
    assert len(mine.train_data) == 2


def test_fashion_mnist_partial_root_is_an_error(tmp_path, writers, monkeypatch):
    debian = tmp_path / "usr-share"
    writers.write_mnist(debian)
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST", debian)
    writers.write_mnist(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        FashionMNIST(root=tmp_path / "partial", category=0).setup()


def test_fashion_mnist_missing_files_mentions_debian(tmp_path, no_debian):
    with pytest.raises(FileNotFoundError, match=r"Debian package folder .*download=True"):
        FashionMNIST(root=tmp_path, category=0).setup()


def test_read_idx_errors(tmp_path, writers):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match=f"'{path}' is not an idx file"):
        read_idx(path)
    truncated = tmp_path / "short-idx1-ubyte"
    truncated.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9]) + b"\x01")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(truncated)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="Cannot read idx file"):
        read_idx(broken)


@pytest.mark.skipif(not mnist_module.DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package(tmp_path):
    datamodule = FashionMNIST(root=tmp_path, category="sneaker")
    datamodule.setup()
    assert datamodule.train_data.images.shape == (6000, 1, 28, 28)
    test = datamodule.test_data.samples
    val = datamodule.val_data.samples
    assert len(test) + len(val) == 10000
    assert (test.label_index == 0).sum() + (val.label_index == 0).sum() == 1000
