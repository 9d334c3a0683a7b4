"""Several processes (Lightning's DDP strategies): global-batch losses, one scorer, each image evaluated once.

A contrastive loss is only the single-device loss when every process contrasts its items against the
items of all processes. The losses of FIRM, MCL and MSC therefore gather the embeddings of all ranks
(:func:`gather_batch`, with their gradients, the ``gather_distributed`` switch of lightly's losses) and
compute the loss of the global batch. Every rank computes the same global loss; the gradient of the
gather sums what every rank's loss asks of an embedding, so after DDP averages the parameter
gradients they equal the single-process gradients of the global batch.

The scorer (banks, Gaussians, MSC's centre) is fitted on rank 0 from all normal images and its
buffers are broadcast (:func:`broadcast_buffers`), so every rank scores with the same statistics. The
scorer's buffers are kept out of DDP's per-step buffer broadcast (:func:`exclude_from_ddp_broadcast`):
a bank of a large data set would otherwise travel at every forward. Evaluation drops the images a
distributed sampler repeated to pad the split (:func:`drop_padding_repeats`), so each counts once.

Every function is a no-op (returns its input) when no process group is initialised or it has one rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Iterable, Iterator
from typing import Any, overload

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def world_size() -> int:
    """Number of processes of the default group (1 without an initialised group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Rank of this process in the default group (0 without an initialised group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gathering(enabled: bool) -> bool:
    """Whether a loss with ``gather_distributed=enabled`` gathers now (enabled and more than one process)."""
    return enabled and world_size() > 1


def _all_gather_padded(tensor: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """``all_gather`` of tensors whose first dimension differs between ranks (``sizes``); one tensor per rank."""
    largest = max(sizes)
    padded = tensor
    if tensor.shape[0] < largest:
        padding = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, padding])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return [part[:size] for part, size in zip(parts, sizes, strict=True)]


class _GatherWithGradient(torch.autograd.Function):
    """All ranks' rows in rank order; the backward pass returns to each rank the summed gradient of its rows."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        ctx.sizes = sizes
        return torch.cat(_all_gather_padded(tensor, sizes))

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad_output.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: rank()])
        return grad[start : start + ctx.sizes[rank()]], None


@overload
def gather_batch(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


@overload
def gather_batch(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]: ...


def gather_batch(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Concatenate the tensors of all ranks along the first dimension, in rank order.

    Floating tensors keep their gradients: the backward pass sums, over all ranks, the gradient
    of each gathered row and hands it to the rank the row came from (so with DDP's averaging of
    parameter gradients, a loss computed identically on every rank from the gathered batch
    trains like the same loss on one device). Ranks may hold different numbers of rows; all
    tensors of one call must have the same number of rows on a rank. ``None`` stays ``None``.
    Without several processes the tensors are returned unchanged.

    Returns:
        The gathered tensors, in the order given.
    """
    present = [tensor for tensor in tensors if tensor is not None]
    if world_size() == 1 or not present:
        return tensors
    rows = present[0].shape[0]
    if any(tensor.shape[0] != rows for tensor in present):
        msg = f"gather_batch needs the same number of rows in every tensor, got {[t.shape[0] for t in present]}."
        raise ValueError(msg)
    sizes_tensor = torch.tensor([rows], device=present[0].device)
    all_sizes = [torch.zeros_like(sizes_tensor) for _ in range(world_size())]
    dist.all_gather(all_sizes, sizes_tensor)
    sizes = [int(size) for size in torch.cat(all_sizes).tolist()]
    gathered: list[torch.Tensor | None] = []
    for tensor in tensors:
        if tensor is None:
            gathered.append(None)
        elif tensor.is_floating_point() and tensor.requires_grad:
            gathered.append(_GatherWithGradient.apply(tensor, sizes))
        else:
            gathered.append(torch.cat(_all_gather_padded(tensor, sizes)))
    return tuple(gathered)


def broadcast_from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as rank 0 holds it (same shape on every rank), in place; unchanged with one process."""
    if world_size() > 1:
        dist.broadcast(tensor, src=0)
    return tensor


def broadcast_buffers(module: nn.Module) -> None:
    """Give every buffer below ``module`` rank 0's shape, dtype and values (a bank fitted on rank 0, say).

    Buffers whose shape differs on a rank (an empty bank) are replaced by a tensor of rank 0's shape
    first. A no-op with one process.
    """
    if world_size() == 1:
        return
    named = list(module.named_buffers())
    layout = [[name, list(buffer.shape), str(buffer.dtype).removeprefix("torch.")] for name, buffer in named]
    shared: list[Any] = [layout]
    dist.broadcast_object_list(shared, src=0)
    for name, shape, dtype in shared[0]:
        owner_name, _, attribute = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        buffer = getattr(owner, attribute)
        dtype = getattr(torch, dtype)
        if list(buffer.shape) != shape or buffer.dtype != dtype:
            buffer = torch.empty(shape, dtype=dtype, device=buffer.device)
            setattr(owner, attribute, buffer)
        dist.broadcast(buffer, src=0)


def exclude_from_ddp_broadcast(module: nn.Module, names: Iterable[str]) -> None:
    """Keep the named parameters/buffers of ``module`` out of DDP's broadcast before every forward.

    Call before DDP wraps ``module`` (Lightning: in ``setup``). Uses DDP's own hook for it
    (``_set_params_and_buffers_to_ignore_for_model``), which adds to what was ignored before.
    """
    names = sorted({*getattr(module, "_ddp_params_and_buffers_to_ignore", ()), *names})
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)


@contextlib.contextmanager
def local_batchnorm(module: nn.Module) -> Iterator[None]:
    """Inside, :class:`~torch.nn.SyncBatchNorm` layers below ``module`` normalise with this process's batch only.

    For passes that run on one rank (a BatchNorm recalibration before a scorer fit on rank 0): a
    synchronised layer in train mode would otherwise wait for the other ranks. Other layers are untouched.
    """
    layers = [layer for layer in module.modules() if isinstance(layer, nn.SyncBatchNorm)]
    for layer in layers:
        layer.forward = types.MethodType(_BatchNorm.forward, layer)  # type: ignore[method-assign]  # restored in finally
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def unpadded_mask(loader: Any, batch_idx: int, batch_size: int) -> torch.Tensor | None:
    """Which items of an evaluation batch are not repeats added by a distributed sampler's padding.

    Lightning shards evaluation loaders with a non-shuffling :class:`~torch.utils.data.DistributedSampler`,
    which repeats the first images so that every rank gets as many: rank ``r``'s ``j``-th image is
    image ``r + j * world_size`` of the split, a repeat when that is past the end.

    Args:
        loader: The evaluation loader of the batch.
        batch_idx: Index of the batch in the loader.
        batch_size: Items in the batch.

    Returns:
        ``(batch_size,)`` bool, ``False`` for repeats; ``None`` when the loader is not sharded that way
        or the batch holds no repeat.
    """
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, torch.utils.data.DistributedSampler) or sampler.shuffle or sampler.drop_last:
        return None
    num_images = len(sampler.dataset)  # type: ignore[arg-type]  # a map-style dataset has a length
    first = batch_idx * (getattr(loader, "batch_size", None) or batch_size)
    positions = sampler.rank + (first + torch.arange(batch_size)) * sampler.num_replicas
    keep = positions < num_images
    return None if bool(keep.all()) else keep


def drop_padding_repeats(batch: Any, loader: Any, batch_idx: int) -> None:
    """Remove from an evaluation ``batch`` (an anomalib batch dataclass, in place) the repeats of :func:`unpadded_mask`.

    Lightning pads evaluation splits so that every rank gets as many images; the metrics and the
    post-processor's statistics, gathered over the ranks, then see every image exactly once. Every
    per-image field (tensors and lists as long as the batch) is filtered. A batch that held only the
    repeat becomes empty; the models' metrics take that (:mod:`.evaluation_metrics`).
    """
    keep = unpadded_mask(loader, batch_idx, len(batch.image))
    if keep is None:
        return
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        if isinstance(value, torch.Tensor) and value.ndim > 0 and len(value) == len(keep):
            changes[field.name] = value[keep.to(value.device)]
        elif isinstance(value, list | tuple) and len(value) == len(keep):
            changes[field.name] = [item for item, kept in zip(value, keep.tolist(), strict=True) if kept]
    batch.update(**changes)
