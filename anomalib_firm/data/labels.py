"""Readable labels and captions of predicted items (shared by the visualizer and the prediction report)."""

from __future__ import annotations

from typing import Any

import torch


def scalar_value(value: Any) -> float | None:
    """A 0-d or one-element tensor/array/number as a float, else ``None``."""
    if value is None:
        return None
    value = torch.as_tensor(value)
    return float(value.reshape(-1)[0]) if value.numel() == 1 else None


def label_name(label: Any) -> str | None:
    """``"anomalous"`` / ``"normal"`` for a 0/1 (or boolean) label, ``None`` when there is none."""
    value = scalar_value(label)
    return None if value is None else ("anomalous" if value >= 0.5 else "normal")


def prediction_caption(item: Any) -> str | None:
    """``"Anomalous, score 0.912 (truth: normal)"`` for an item; ``None`` when it has no score."""
    score = scalar_value(getattr(item, "pred_score", None))
    if score is None:
        return None
    label = label_name(getattr(item, "pred_label", None))
    caption = f"{label.capitalize()}, score {score:.3f}" if label else f"Score {score:.3f}"
    truth = label_name(getattr(item, "gt_label", None))
    return f"{caption} (truth: {truth})" if truth else caption
