"""Score normalisation that keeps the order of the raw scores, so the reported AUROC is theirs.

anomalib's :class:`~anomalib.post_processing.PostProcessor` maps a raw score ``s`` to
``(s - threshold) / (max - min) + 0.5`` with ``min``/``max`` learned on the validation split,
then clamps to [0, 1]. Test scores beyond the validation range all become exactly 0 or 1; those
ties change the image AUROC anomalib's evaluator reports (measured: MCL on a digits task, 0.883
reported against 0.891 for its raw scores). The models here score with k-NN distances and
Mahalanobis distances whose tails reach far past the validation range.

:class:`OrderPreservingPostProcessor` replaces the clamp by a strictly increasing map onto
(0, 1): with ``d = (s - threshold) / (max - min)``, ``normalised = 0.5 + d / (2 (|d| + 0.5))``.
The threshold still maps to 0.5 (so ``pred_label`` is unchanged), the validation range ends map
near 0.25 and 0.75, and no two different raw scores share a normalised one except beyond float
resolution (``|d|`` in the millions). Without validation statistics the raw scores are squashed
the same way around 0 (anomalib would pass them through, and its AUROC would then sigmoid them).
Everything else (statistics, thresholds, checkpoints, export) is anomalib's, but for its image
minimum and maximum taking evaluation batches with no image (a DDP process's padding dropped, see
:mod:`~anomalib_firm.models.components.evaluation.metrics`).
"""

from __future__ import annotations

from typing import Any

import torch
from anomalib.post_processing import PostProcessor

from anomalib_firm.models.components.evaluation import metrics as evaluation_metrics

#: ``c`` in ``0.5 + d / (2 (|d| + c))``: the half-range ``|d| = c`` maps to 0.25 / 0.75.
SOFTNESS = 0.5


class OrderPreservingPostProcessor(PostProcessor):
    """anomalib's post-processor with a strictly increasing normalisation instead of a clamp (see module)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The same metric under the same name (checkpoints unchanged), taking batches with no image.
        self._image_min_max_metric = evaluation_metrics.MinMax(fields=["pred_score"], strict=False)

    @staticmethod
    def _normalize(
        preds: torch.Tensor | None,
        norm_min: torch.Tensor,
        norm_max: torch.Tensor,
        threshold: torch.Tensor,
    ) -> torch.Tensor | None:
        """Map raw scores onto (0, 1), threshold to 0.5, keeping their order (see the module docstring).

        Without validation statistics (no validation ran, e.g. ``max_epochs=0``) the raw scores
        are squashed the same way around 0 with unit scale instead of passed through: anomalib's
        AUROC (torchmetrics) reads scores outside [0, 1] as logits and applies a sigmoid, which
        ties all of MCL's Mahalanobis distances (~100) at 1.0 and reports 0.5.
        """
        if preds is None:
            return preds
        has_range = ~torch.isnan(norm_min) & ~torch.isnan(norm_max)
        threshold = torch.where(torch.isnan(threshold), (norm_max + norm_min) / 2, threshold)
        threshold = torch.where(has_range, threshold, torch.zeros_like(threshold))
        value_range = norm_max - norm_min
        safe_range = torch.where(has_range & (value_range > 0), value_range, torch.ones_like(value_range))
        distance = (preds - threshold) / safe_range
        return 0.5 + distance / (2 * (distance.abs() + SOFTNESS))
