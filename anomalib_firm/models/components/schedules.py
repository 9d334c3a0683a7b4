"""Learning-rate schedules as multiplicative factors of the base rate (for ``LambdaLR``).

``torch.optim.lr_scheduler.OneCycleLR`` divides by zero when the warm-up is shorter than
two steps (1% of a 100-step run), so the one-cycle factor is written out here; where both
are defined they agree.
"""

from __future__ import annotations

import math


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
    warmup_end = max(warmup_fraction * total_steps - 1, 0.0)
    last = max(total_steps - 1, 1)
    if step <= warmup_end and warmup_end > 0:
        return _cosine_between(initial, 1.0, step / warmup_end)
    progress = (step - warmup_end) / max(last - warmup_end, 1e-12)
    return _cosine_between(1.0, final, min(progress, 1.0))


def cosine_factor(step: int, total_steps: int, final_factor: float = 0.0) -> float:
    """Cosine decay from 1 at step 0 to ``final_factor`` at ``total_steps`` (per-step)."""
    return _cosine_between(1.0, final_factor, min(step / max(total_steps, 1), 1.0))


def _cosine_between(start: float, end: float, progress: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2
