"""BatchNorm settings shared by the three models."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def set_batchnorm_momentum(module: nn.Module, momentum: float | None) -> int:
    """Set the running-statistics momentum of every BatchNorm layer below ``module``.

    PyTorch's convention: ``running = (1 - momentum) * running + momentum * batch``, so a large
    momentum (FIRM's authors use 0.9) makes the running statistics follow the latest batches.
    After a short run with the default 0.1 the running statistics still mostly hold their
    initial values (mean 0, variance 1) while the weights have moved: a scorer fitted in eval
    mode then sees features of a network that never existed during training.

    Args:
        module: Network whose BatchNorm layers (1d/2d/3d, SyncBatchNorm, timm's) are changed.
        momentum: New momentum in ``(0, 1]``, or ``None`` to keep every layer's own value.

    Returns:
        Number of BatchNorm layers changed.

    Raises:
        ValueError: If ``momentum`` is outside ``(0, 1]``.
    """
    if momentum is None:
        return 0
    if not 0 < momentum <= 1:
        msg = f"bn_momentum must lie in (0, 1] (PyTorch's convention: weight of the newest batch), got {momentum}."
        raise ValueError(msg)
    layers = [layer for layer in module.modules() if isinstance(layer, _BatchNorm)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)
