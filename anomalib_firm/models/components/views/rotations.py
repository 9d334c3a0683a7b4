"""Rotation shifting: the four 90-degree rotations of a batch, with their ids.

FIRM uses the rotated copies as synthetic outliers, MCL as shifted classes, and both score
test images in all four rotations.
"""

from __future__ import annotations

import torch

NUM_ROTATIONS = 4


def rotate(images: torch.Tensor, rotation_id: int) -> torch.Tensor:
    """Rotate (B, C, H, W) images by ``rotation_id`` x 90 degrees counter-clockwise."""
    return torch.rot90(images, rotation_id, dims=(-2, -1))


def expand_rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the four rotations of a batch.

    Args:
        images: (B, C, H, W), square.

    Returns:
        ``(4B, C, H, W)`` images ordered rotation-major (all of rotation 0, then 90, ...) and
        their rotation ids ``(4B,)`` int64 in 0..3 (item ``r * B + i`` is image ``i`` rotated).
    """
    if images.shape[-1] != images.shape[-2]:
        msg = f"Rotation shifting needs square images, got {tuple(images.shape[-2:])}: set a square image_size."
        raise ValueError(msg)
    rotated = torch.cat([rotate(images, rotation_id) for rotation_id in range(NUM_ROTATIONS)])
    return rotated, rotation_ids(images.shape[0], images.device)


def rotation_ids(num_images: int, device: torch.device | None = None) -> torch.Tensor:
    """Rotation id of each of the ``4 x num_images`` items of :func:`expand_rotations`: ``(4B,)`` int64."""
    return torch.arange(NUM_ROTATIONS, device=device).repeat_interleave(num_images)
