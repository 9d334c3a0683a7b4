"""Images with more than 8 bits per pixel: read with their full range, or refused naming the file.

PIL's ``convert("RGB")`` (what anomalib's ``read_image`` does, and what our readers did) clips
16-bit grey values (modes ``I;16``, ``I;16B``...) to 0-255 instead of scaling them, so a
16-bit picture turns almost white. 16-bit colour PNGs are not affected (PIL reads them as
8-bit ``RGB`` correctly). 32-bit integer (``I``) and float (``F``) images have no range the
file states (0-1? 0-4095?), so they are refused rather than guessed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: PIL modes of 16-bit grey images: values 0-65535, scaled to 0-255.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
#: PIL modes whose value range the file does not state: refused.
UNSCALED_MODES = frozenset({"I", "F"})
#: How to convert such files (ImageMagick's ``-depth 8`` scales the full range).
CONVERT_HINT = "convert them to 8-bit images first (e.g. ImageMagick: mogrify -depth 8 FILE)"


def is_high_depth(mode: str) -> bool:
    """True for the PIL modes that ``convert("RGB")`` clips instead of scaling."""
    return mode in SIXTEEN_BIT_MODES or mode in UNSCALED_MODES


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` as an 8-bit image with its full range (16-bit grey scaled by 255/65535); others unchanged.

    Raises:
        ValueError: For 32-bit integer or float images (the message says what to do; callers name the file).
    """
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.uint32)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    if image.mode in UNSCALED_MODES:
        kind = "32-bit integer" if image.mode == "I" else "floating-point"
        msg = (
            f"it has {kind} pixels (PIL mode {image.mode!r}), whose range the file does not state, so it cannot "
            "be scaled to 0-1 reliably: convert it to an 8-bit image first (e.g. ImageMagick: mogrify -depth 8 FILE)"
        )
        raise ValueError(msg)
    return image


def high_depth_message(files: list[tuple[str, str]], reader: str, shown: int = 5) -> str:
    """Why ``(path, mode)`` files cannot go through ``reader`` (e.g. anomalib's ``Folder``): it clips them."""
    examples = ", ".join(f"'{path}' ({mode})" for path, mode in files[:shown])
    more = f" and {len(files) - shown} more" if len(files) > shown else ""
    return (
        f"{len(files)} image file(s) have more than 8 bits per grey pixel: {examples}{more}. {reader} reads images "
        "with PIL's convert('RGB'), which clips these values to 0-255 instead of scaling them (a 16-bit image "
        "turns almost white), so the model would train and test on distorted images. Nothing was trained: "
        f"{CONVERT_HINT}, or read the tree with --data ClassFolder (its train_dir/test_dir layout fits a Folder tree), "
        "which scales 16-bit grey images."
    )
