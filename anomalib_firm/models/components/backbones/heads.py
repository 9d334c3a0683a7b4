"""Projection heads put on top of an encoder for the contrastive loss (discarded at scoring)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from anomalib_firm.console import InputError


class ProjectionHead(nn.Module):
    """MLP projection head: ``num_layers`` linear layers, optional BatchNorm, L2-normalised output.

    FIRM uses bias-free layers ``in -> 1024 (-> ... -> 1024) -> 128`` with BN + ReLU after each
    hidden layer and a final BN without affine parameters (2 layers by default, 8 in the authors'
    code); MCL uses ``512 -> 2048 -> ReLU -> 128`` with biases and no BN.

    Args:
        in_dim: Encoder feature dimension.
        hidden_dim: Width of the hidden layers.
        out_dim: Embedding dimension.
        num_layers: Number of linear layers (>= 1).
        batch_norm: BatchNorm after every hidden linear layer.
        bias: Biases in the linear layers.
        final_batch_norm: A BatchNorm without affine parameters on the output (before L2 norm).
        normalize: L2-normalise the output.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        bias: bool = False,
        final_batch_norm: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            msg = f"num_layers must be >= 1, got {num_layers}."
            raise InputError(msg)
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_dim, bias=bias))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim, bias=bias))
        if final_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.layers = nn.Sequential(*layers)
        self.normalize = normalize

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map features (B, in_dim) to embeddings (B, out_dim), unit-norm if ``normalize``."""
        embeddings = self.layers(features)
        return F.normalize(embeddings, dim=1) if self.normalize else embeddings
