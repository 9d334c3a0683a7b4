"""Learning-rate (and momentum) schedules: factors of the base rate for ``LambdaLR``, and FIRM's one-cycle.

``torch.optim.lr_scheduler.OneCycleLR`` divides by zero when the warm-up is shorter than
two steps (1% of a 100-step run), so the one-cycle factor is written out here; where both
are defined they agree.
"""

from __future__ import annotations

import math

import torch


def one_cycle_factor(
    step: int,
    total_steps: int,
    warmup_fraction: float = 0.01,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """One-cycle factor: cosine warm-up from ``1/div_factor`` to 1, then cosine decay to ``1/(div*final_div)``.

    Same shape as ``OneCycleLR(anneal_strategy="cos", three_phase=False)``; warm-up steps are
    ``warmup_fraction * total_steps - 1`` as there (clamped at 0).
    """
    initial = 1.0 / div_factor
    final = initial / final_div_factor
    warming_up, progress = _one_cycle_phase(step, total_steps, warmup_fraction)
    if warming_up:
        return _cosine_between(initial, 1.0, progress)
    return _cosine_between(1.0, final, progress)


def one_cycle_momentum(
    step: int,
    total_steps: int,
    warmup_fraction: float = 0.01,
    momentum_range: tuple[float, float] = (0.85, 0.95),
) -> float:
    """SGD momentum of the one-cycle policy: high while the learning rate is low, and the reverse.

    As ``OneCycleLR(cycle_momentum=True)`` (which FIRM's authors use with its defaults): cosine
    from ``max`` down to ``min`` over the warm-up, then back up to ``max`` over the decay.
    """
    low, high = momentum_range
    warming_up, progress = _one_cycle_phase(step, total_steps, warmup_fraction)
    if warming_up:
        return _cosine_between(high, low, progress)
    return _cosine_between(low, high, progress)


class OneCycleSchedule(torch.optim.lr_scheduler.LambdaLR):
    """Per-step one-cycle learning rate (:func:`one_cycle_factor`), optionally momentum (:func:`one_cycle_momentum`).

    Args:
        optimizer: An optimiser with a ``momentum`` hyper-parameter (SGD) when ``momentum_range`` is given.
        total_steps: Optimiser steps of the whole run.
        warmup_fraction: Warm-up share of the steps.
        momentum_range: ``(min, max)`` momentum cycled against the learning rate; ``None`` leaves
            the optimiser's momentum fixed.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_fraction: float = 0.01,
        momentum_range: tuple[float, float] | None = (0.85, 0.95),
    ) -> None:
        self.total_steps = total_steps
        self.warmup_fraction = warmup_fraction
        self.momentum_range = momentum_range
        super().__init__(optimizer, lambda step: one_cycle_factor(step, total_steps, warmup_fraction))

    def step(self, epoch: int | None = None) -> None:
        """Advance the learning rate, then set the momentum of the new step."""
        super().step(epoch)
        if self.momentum_range is not None:
            momentum = one_cycle_momentum(self.last_epoch, self.total_steps, self.warmup_fraction, self.momentum_range)
            for group in self.optimizer.param_groups:
                group["momentum"] = momentum


def _one_cycle_phase(step: int, total_steps: int, warmup_fraction: float) -> tuple[bool, float]:
    """(in warm-up, progress in [0, 1] through the current phase), with OneCycleLR's phase boundaries."""
    warmup_end = max(warmup_fraction * total_steps - 1, 0.0)
    last = max(total_steps - 1, 1)
    if step <= warmup_end and warmup_end > 0:
        return True, step / warmup_end
    return False, min((step - warmup_end) / max(last - warmup_end, 1e-12), 1.0)


def cosine_factor(step: int, total_steps: int, final_factor: float = 0.0) -> float:
    """Cosine decay from 1 at step 0 to ``final_factor`` at ``total_steps`` (per-step)."""
    return _cosine_between(1.0, final_factor, min(step / max(total_steps, 1), 1.0))


def _cosine_between(start: float, end: float, progress: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2
