"""Exact change of per-channel input normalisation, so that every backbone takes the same input convention."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class InputRenormalization(nn.Module):
    """Exact change of per-channel input normalisation, ``(x * std_in + mean_in - mean_out) / std_out``.

    Lets every backbone take the same input convention (ImageNet mean/std by default) while
    networks trained with another one (EfficientNet-Lite: 0.5/0.5) still see what they were
    trained on. Fixed buffers, not saved in the state dict; one multiply-add, exportable.

    Args:
        input_mean: Mean the incoming images were normalised with, per channel.
        input_std: Standard deviation the incoming images were normalised with, per channel.
        output_mean: Mean the network expects.
        output_std: Standard deviation the network expects.
    """

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(
        self,
        input_mean: Sequence[float],
        input_std: Sequence[float],
        output_mean: Sequence[float],
        output_std: Sequence[float],
    ) -> None:
        super().__init__()
        in_mean, in_std, out_mean, out_std = (
            torch.tensor(values, dtype=torch.float64) for values in (input_mean, input_std, output_mean, output_std)
        )
        scale = in_std / out_std
        shift = (in_mean - out_mean) / out_std
        self.register_buffer("scale", scale.float().view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.float().view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Re-normalise (B, C, H, W) images channel by channel."""
        return images * self.scale + self.shift
