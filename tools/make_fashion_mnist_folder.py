r"""Write a Fashion-MNIST class as an anomalib ``Folder`` tree: a small real task of 28 px photos.

One class is normal. ``train/good`` holds a seeded draw of ``--train`` training images of that
class, ``test/good`` a seeded draw of ``--test`` of its test images and ``test/bad`` twice as many
test images of the other nine classes (stratified by chance). Grey PNGs at the data set's 28 px.
The tree is the same at every run (fixed seed). Reads the idx files of the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or of ``--source``.

Usage (then train with the stock command, e.g. with the learning-curve callback)::

    python tools/make_fashion_mnist_folder.py fmnist0 --category 0
    anomalib train --model FIRM --data Folder --data.name fmnist0 --data.root fmnist0 \\
        --data.normal_dir train/good --data.abnormal_dir test/bad --data.normal_test_dir test/good \\
        --trainer.max_epochs 5 --trainer.callbacks anomalib_firm.callbacks.LearningCurve
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from anomalib_firm.data.mnist import DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES, IDX_FILES, read_idx


def read_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` of the ``train`` or ``test`` split in ``source``."""
    arrays = []
    for kind in ("images", "labels"):
        name = IDX_FILES[f"{split}_{kind}"]
        path = next((p for p in (source / name, source / f"{name}.gz") if p.is_file()), None)
        if path is None:
            msg = f"No {name}[.gz] in '{source}': install dataset-fashion-mnist or pass --source."
            raise SystemExit(msg)
        arrays.append(read_idx(path))
    return arrays[0], arrays[1]


def write_folder(root: Path, category: int, num_train: int, num_test: int, source: Path, seed: int) -> dict[str, int]:
    """Write the tree under ``root``; return the images per folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    train_images, train_labels = read_split(source, "train")
    test_images, test_labels = read_split(source, "test")

    def draw(labels: np.ndarray, normal: bool, count: int) -> np.ndarray:
        candidates = np.flatnonzero((labels == category) == normal)
        return np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))

    folders = {
        "train/good": (train_images, train_labels, draw(train_labels, True, num_train)),
        "test/good": (test_images, test_labels, draw(test_labels, True, num_test)),
        "test/bad": (test_images, test_labels, draw(test_labels, False, 2 * num_test)),
    }
    for folder, (images, labels, indices) in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in indices:
            name = f"{index:05d}_{FASHION_MNIST_CLASSES[labels[index]]}.png"
            Image.fromarray(images[index], mode="L").save(root / folder / name)
    return {folder: len(indices) for folder, (_, _, indices) in folders.items()}


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder to write (created)")
    parser.add_argument("--category", type=int, default=0, help="normal class (0-9)")
    parser.add_argument("--train", type=int, default=300, help="normal training images")
    parser.add_argument("--test", type=int, default=300, help="normal test images (twice as many anomalies)")
    parser.add_argument("--source", type=Path, default=DEBIAN_FASHION_MNIST, help="folder of the idx files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = write_folder(args.root, args.category, args.train, args.test, args.source, args.seed)
    print(", ".join(f"{folder}: {count}" for folder, count in counts.items()), f"-> {args.root}")


if __name__ == "__main__":
    main()
