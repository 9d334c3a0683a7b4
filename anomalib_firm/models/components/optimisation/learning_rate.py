"""The linear learning-rate scaling rule: a base rate given for a reference batch, used at the run's batch.

Contrastive papers state their rate for one batch size (FIRM: 0.01 at 32 items, MCL: 0.3 per
256 items). A run with another batch takes ``lr x items / reference`` so that each training item
moves the weights by about as much as in the paper: with 4x larger batches (4x fewer steps per
epoch) the same epochs then make about the same progress (Goyal et al. 2017).
"""

from __future__ import annotations

from typing import Any

from anomalib_firm.console import InputError
from anomalib_firm.models.components.views.rotations import NUM_ROTATIONS


def items_per_step(trainer: Any, model_name: str) -> int:
    """Items (4 rotations x images) per optimiser step of ``trainer``'s run, over gradient accumulation and devices.

    The batch size is the data module's ``train_batch_size`` (else the train loader's), capped
    by the number of training images (a set smaller than one batch gives smaller batches).

    Raises:
        InputError: When neither says the batch size (``model_name`` is named in the message).
    """
    datamodule = getattr(trainer, "datamodule", None)
    batch_size = getattr(datamodule, "train_batch_size", None)
    if batch_size is None:
        batch_size = getattr(trainer.train_dataloader, "batch_size", None)
    if batch_size is None:
        msg = (
            f"{model_name} scales the learning rate by the batch size but cannot find it: "
            "pass scale_lr=False (--model.scale_lr false) and set lr."
        )
        raise InputError(msg)
    train_data = getattr(datamodule, "train_data", None)
    if train_data is not None:
        batch_size = min(int(batch_size), len(train_data))
    accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    world_size = int(getattr(trainer, "world_size", 1) or 1)
    return NUM_ROTATIONS * int(batch_size) * accumulate * world_size


def scaled_learning_rate(lr: float, items: int, reference_items: int) -> float:
    """``lr`` given for ``reference_items`` items per step, at ``items`` per step: ``lr x items / reference_items``."""
    return lr * items / reference_items
