"""FIRM's training views: the authors' SimCLR-style crops, jitter and blur, made on the device."""

from __future__ import annotations

from anomalib_firm.models.components.views.augmentations import ContrastiveViews


def firm_views(
    output_size: int,
    crop_scale: tuple[float, float] = (0.25, 1.0),
    jitter: float = 0.4,
    blur_probability: float = 0.75,
) -> ContrastiveViews:
    """FIRM: square crop (scale 0.25-1), jitter 0.4 x 4 always, blur k=3 sigma 0.1-2 p 0.75."""
    return ContrastiveViews(
        output_size,
        crop_scale=crop_scale,
        crop_ratio=(1.0, 1.0),
        jitter=(jitter, jitter, jitter, jitter),
        jitter_probability=1.0,
        blur_probability=blur_probability,
        blur_kernel_size=3,
    )
