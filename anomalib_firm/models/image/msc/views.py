"""MSC's training views: MoCo-v2's augmentations, as the authors' code uses them."""

from __future__ import annotations

from anomalib_firm.models.components.views.augmentations import ContrastiveViews


def msc_views(output_size: int, crop_scale: tuple[float, float] = (0.2, 1.0)) -> ContrastiveViews:
    """MSC (MoCo-v2): crop 0.2-1, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grey p 0.2, blur p 0.5, h-flip."""
    return ContrastiveViews(
        output_size,
        crop_scale=crop_scale,
        horizontal_flip=0.5,
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_probability=0.8,
        grayscale_probability=0.2,
        blur_probability=0.5,
    )
