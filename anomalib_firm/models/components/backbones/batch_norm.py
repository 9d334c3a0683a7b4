"""BatchNorm handling shared by the three models: momentum, recalibration ("precise BN"), buffer names.

- :func:`set_batchnorm_momentum`: the running-statistics momentum (the ``bn_momentum`` option);
- :func:`recalibrate_batchnorm`: recompute the running statistics on given images with the current
  weights (the ``bn_recalibration`` option, before every scorer fit);
- :func:`batchnorm_layers`, :func:`batchnorm_buffer_names`: the layers and their buffers (DDP keeps
  broadcasting those while the scorer's buffers are excluded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from anomalib_firm.console import InputError


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
        raise InputError(msg)
    layers = batchnorm_layers(module)
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def batchnorm_layers(module: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer below ``module`` (1d/2d/3d, SyncBatchNorm, timm's), in module order."""
    return [layer for layer in module.modules() if isinstance(layer, _BatchNorm)]


def _running_statistics(layer: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A layer's running mean, variance and batch count (layers without running statistics are refused)."""
    if layer.running_mean is None or layer.running_var is None or layer.num_batches_tracked is None:
        msg = f"{type(layer).__name__} keeps no running statistics (track_running_stats=False): nothing to recalibrate."
        raise ValueError(msg)
    return layer.running_mean, layer.running_var, layer.num_batches_tracked


def batchnorm_buffer_names(module: nn.Module) -> set[str]:
    """Names (as ``module.named_buffers()`` gives them) of the BatchNorm layers' running statistics and counters."""
    return {
        f"{name}.{buffer}"
        for name, layer in module.named_modules()
        if isinstance(layer, _BatchNorm)
        for buffer, _ in layer.named_buffers(recurse=False)
    }


def recalibrate_batchnorm(
    module: nn.Module, batches: Iterable[torch.Tensor], forward: Callable[[torch.Tensor], Any]
) -> int:
    """Recompute every BatchNorm layer's running statistics on ``batches`` with the current weights ("precise BN").

    One pass of ``forward`` over the batches in which only the BatchNorm layers are in train mode
    (with ``momentum=None``, the cumulative mean over the batches); other layers stay in eval mode
    and no gradient is kept. Layers the forward path does not reach keep their statistics. The
    momentum of every layer and the train/eval mode of ``module`` are restored afterwards.

    Args:
        module: Network whose BatchNorm layers are recalibrated.
        batches: Input batches (read once).
        forward: Runs the path to calibrate on one batch (e.g. the scorer's feature extraction).

    Returns:
        Number of BatchNorm layers below ``module``.
    """
    layers = batchnorm_layers(module)
    if not layers:
        return 0
    was_training = module.training
    saved = {}
    for layer in layers:
        running_mean, running_var, _ = _running_statistics(layer)
        saved[layer] = (layer.momentum, running_mean.clone(), running_var.clone())
    module.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    with torch.no_grad():
        for images in batches:
            forward(images)
    for layer, (momentum, mean, var) in saved.items():
        layer.momentum = momentum
        running_mean, running_var, batches_tracked = _running_statistics(layer)
        if int(batches_tracked) == 0:  # not on the forward path: keep the old statistics
            running_mean.copy_(mean)
            running_var.copy_(var)
    module.train(was_training)
    return len(layers)


def set_batchnorm_eval(module: nn.Module) -> nn.Module:
    """Put every BatchNorm layer below ``module`` in eval mode (running statistics used, not updated).

    Covers :class:`torch.nn.BatchNorm1d/2d/3d`, SyncBatchNorm and timm's ``BatchNormAct2d``
    (all subclasses of ``_BatchNorm``). The affine parameters still receive gradients.

    Returns:
        ``module``, for chaining.
    """
    for layer in module.modules():
        if isinstance(layer, _BatchNorm):
            layer.eval()
    return module
