"""tools/make_fashion_mnist_folder.py writes a one-vs-rest Folder tree from idx files, the same at every run."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

TOOLS = Path(__file__).parents[2] / "tools"


@pytest.fixture(scope="module")
def tool() -> Iterator[ModuleType]:
    sys.path.insert(0, str(TOOLS))
    try:
        yield importlib.import_module("make_fashion_mnist_folder")
    finally:
        sys.path.remove(str(TOOLS))


def test_tree_holds_the_normal_class_and_twice_as_many_others(tool, writers, tmp_path: Path) -> None:
    arrays = writers.write_mnist(tmp_path / "idx", train_per_class=5, test_per_class=4)
    counts = tool.write_folder(tmp_path / "tree", category=3, num_train=4, num_test=3, source=tmp_path / "idx", seed=0)
    assert counts == {"train/good": 4, "test/good": 3, "test/bad": 6}
    for folder in counts:
        files = sorted((tmp_path / "tree" / folder).glob("*.png"))
        assert len(files) == counts[folder]
        split = "train" if folder.startswith("train") else "test"
        for file in files:
            index = int(file.name.split("_")[0])
            assert (arrays[f"{split}_labels"][index] == 3) == folder.endswith("good"), file.name
            np.testing.assert_array_equal(np.array(Image.open(file)), arrays[f"{split}_images"][index])
    again = tool.write_folder(tmp_path / "again", category=3, num_train=4, num_test=3, source=tmp_path / "idx", seed=0)
    assert again == counts
    for folder in counts:
        names = sorted(path.name for path in (tmp_path / "tree" / folder).glob("*.png"))
        assert names == sorted(path.name for path in (tmp_path / "again" / folder).glob("*.png"))
