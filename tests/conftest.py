"""Shared fixtures: small real data (scikit-learn digits) written as an anomalib Folder tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_digits_folder(root: Path, normal_digit: int = 0, num_train: int = 40, num_test: int = 16) -> Path:
    """Write ``root/{train/good, test/good, test/bad}`` PNGs (16x16 RGB) from sklearn's digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16 * 255).astype(np.uint8)
    normal = np.flatnonzero(digits.target == normal_digit)
    other = np.flatnonzero(digits.target != normal_digit)
    layout = {
        "train/good": normal[:num_train],
        "test/good": normal[num_train : num_train + num_test],
        "test/bad": other[::37][:num_test],
    }
    for folder, indices in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in indices:
            image = Image.fromarray(images[index]).resize((16, 16), Image.NEAREST).convert("RGB")
            image.save(root / folder / f"{index:04d}.png")
    return root


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny one-vs-rest task (digit 0 normal) as a Folder tree, shared by the session."""
    return write_digits_folder(tmp_path_factory.mktemp("digits"))
