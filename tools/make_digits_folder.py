r"""Write scikit-learn's digits as an anomalib ``Folder`` tree: a small real task with no download.

One digit is normal. ``train/good`` holds that digit's training half (scikit-learn's 8x8
images split by the ``Digits`` data module's fixed seed), ``test/good`` its test half and
``test/bad`` a random draw, twice as many, of the other digits' test images. Images are
grey PNGs upscaled with nearest-neighbour (8x8 -> ``--size``), so the files look like small
inspection crops. The tree is the same at every run (fixed seeds); the writer is
:func:`anomalib_firm.data.digits.write_digits_folder` (the tests' Folder tree uses it too).

Usage (then train with the stock command)::

    python tools/make_digits_folder.py digits5 --digit 5
    anomalib train --model FIRM --data Folder --data.name digits5 --data.root digits5 \\
        --data.normal_dir train/good --data.abnormal_dir test/bad --data.normal_test_dir test/good
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anomalib_firm.data.digits import write_digits_folder


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder to write (created)")
    parser.add_argument("--digit", type=int, default=5, help="normal digit (0-9)")
    parser.add_argument("--size", type=int, default=32, help="side of the written PNGs in pixels")
    args = parser.parse_args()
    counts = write_digits_folder(args.root, args.digit, args.size)
    print(", ".join(f"{folder}: {count}" for folder, count in counts.items()), f"-> {args.root}")


if __name__ == "__main__":
    main()
