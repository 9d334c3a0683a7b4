"""MCL's training views: SimCLR's crops, jitter and grey (the flip happens before the rotations)."""

from __future__ import annotations

from anomalib_firm.models.components.views.augmentations import ContrastiveViews


def mcl_views(output_size: int, crop_scale: tuple[float, float] = (0.08, 1.0)) -> ContrastiveViews:
    """MCL: crop 0.08-1, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grey p 0.2 (flip is done before rotating)."""
    return ContrastiveViews(
        output_size,
        crop_scale=crop_scale,
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_probability=0.8,
        grayscale_probability=0.2,
    )
