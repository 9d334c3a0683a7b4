"""Images with more than 8 bits per pixel: ClassFolder scales 16-bit grey, refuses 32-bit/float; Folder runs refuse."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from cli_utils import digits_folder_datamodule, write_digits_folder
from PIL import Image

from anomalib_firm.console import InputError
from anomalib_firm.data.class_folder import decode_images, read_rgb
from anomalib_firm.models.components.lifecycle.training_data import verify_image_files


def _dark_16bit(size: int = 24) -> np.ndarray:
    """A dark 16-bit grey gradient (values up to about 0.3 of the range): PIL's convert("RGB") clips it to white."""
    return np.linspace(0, 20000, size * size).reshape(size, size).astype(np.uint16)


def test_class_folder_reader_scales_16_bit_grey(tmp_path):
    values = _dark_16bit()
    path = tmp_path / "dark16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
        clipped = np.asarray(image.convert("RGB")).mean() / 255  # what a plain convert reads
    rgb = read_rgb(path, None)
    assert rgb.dtype == np.uint8
    assert rgb.shape == (*values.shape, 3)
    np.testing.assert_allclose(rgb[..., 0] / 255, values / 65535, atol=0.5 / 255 + 1e-9)
    assert rgb.mean() / 255 == pytest.approx(values.mean() / 65535, abs=1e-3)
    assert clipped > 0.9  # the saturated reading this replaces
    # Beside an 8-bit image of the same picture, in one batch: both read alike.
    eight_bit = tmp_path / "dark8.png"
    Image.fromarray(((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)).save(eight_bit)
    batch = decode_images([path, eight_bit], (12, 12))
    assert (batch[0].int() - batch[1].int()).abs().max() <= 1


@pytest.mark.parametrize(("dtype", "kind"), [(np.int32, "32-bit integer"), (np.float32, "floating-point")])
def test_class_folder_reader_refuses_images_without_a_stated_range(tmp_path, dtype, kind):
    path = tmp_path / f"deep_{kind.split()[0]}.tif"
    Image.fromarray(_dark_16bit().astype(dtype)).save(path)
    with pytest.raises(ValueError, match=rf"'{path}'.*{kind} pixels.*8-bit"):
        read_rgb(path, None)


def test_folder_check_refuses_naming_the_16_bit_files(tmp_path):
    root = write_digits_folder(tmp_path / "data", num_train=6, num_test=4)
    datamodule = digits_folder_datamodule(root, train_batch_size=4)
    datamodule.setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        verify_image_files(datamodule)  # 8-bit images: no warning

    target = sorted((root / "train" / "good").glob("*.png"))[0]
    Image.fromarray(_dark_16bit()).save(target)
    with pytest.raises(InputError, match="more than 8 bits") as caught:
        verify_image_files(datamodule)
    message = str(caught.value)
    assert str(target) in message
    assert "I;16" in message
    assert "Folder" in message
    assert "convert('RGB')" in message
    assert "8-bit" in message


def test_folder_check_opens_each_split_once_across_fit_and_test(tmp_path, monkeypatch):
    root = write_digits_folder(tmp_path / "data", num_train=6, num_test=4)
    datamodule = digits_folder_datamodule(root, train_batch_size=4)
    datamodule.setup()
    opened: list[str] = []
    original_open = Image.open

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return original_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    verified: set[int] = set()
    verify_image_files(datamodule, verified)  # fit
    num_files = len(opened)
    assert num_files == len(datamodule.train_data) + len(datamodule.val_data) + len(datamodule.test_data)
    verify_image_files(datamodule, verified)  # test, same data: nothing opened again
    assert len(opened) == num_files
    verify_image_files(datamodule)  # no record kept: every file again
    assert len(opened) == 2 * num_files
