"""anomalib's evaluation metrics for our models, taking batches with no image (DDP padding) as they are.

Under DDP every process evaluates a shard of the split; the distributed sampler pads the split by
repeating its first images, and our models drop those repeats from their evaluation batches
(:func:`~anomalib_firm.models.components.lifecycle.distributed.drop_padding_repeats`) so that each image counts
once. When a process's last batch holds only a repeat (or its whole share is one, with more processes
than images), its batch becomes empty, and anomalib 2.7's ``MinMax`` (the post-processor's
normalisation statistics) and ``F1Score`` fail on an empty tensor.

The two classes below count such a batch as an update that adds nothing: their state stays as it
was, and every process still takes part in the metric's synchronisation at ``compute``. Only metrics
whose states are reduced tensors (sums, minima, maxima) need it: those that keep lists of scores
(``AUROC``, ``F1AdaptiveThreshold``) take an empty batch as it is, and must, so that every process's
list holds a tensor of the right type when the lists are gathered. Each class is anomalib's, under
anomalib's class name (a metric's name, e.g. ``image_F1Score``, is its prefix and class name), with
the same two-line ``update`` written out in each (a shared mixin hid anomalib's signature from the
type checker); nothing of anomalib is changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anomalib import metrics


def holds_no_image(batch: Any, fields: Sequence[str]) -> bool:
    """Whether one of the batch's ``fields`` is present and has no item (an evaluation batch emptied of repeats)."""
    for name in fields:
        value = getattr(batch, name, None)
        if value is not None and getattr(value, "ndim", 1) > 0 and len(value) == 0:
            return True
    return False


class F1Score(metrics.F1Score):
    """anomalib's ``F1Score``; a batch with no image is a counted update that changes nothing (see module)."""

    def update(self, batch: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]  # anomalib's signature
        """Update from ``batch`` unless it holds no image (``torchmetrics`` has counted the call already)."""
        if not holds_no_image(batch, self.fields):
            super().update(batch, *args, **kwargs)


class MinMax(metrics.MinMax):
    """anomalib's ``MinMax`` (normalisation statistics); a batch with no image changes nothing (see module)."""

    def update(self, batch: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]  # anomalib's signature
        """Update from ``batch`` unless it holds no image (``torchmetrics`` has counted the call already)."""
        if not holds_no_image(batch, self.fields):
            super().update(batch, *args, **kwargs)
