"""Lightning callbacks for the models of this package (usable as ``--trainer.callbacks`` with the stock CLI)."""

from anomalib_firm.models.components.lifecycle.prediction_report import PredictionReport

from .learning_curve import LearningCurve, area_under_learning_curve, raw_pixel_knn_scores, validation_auroc

__all__ = [
    "LearningCurve",
    "PredictionReport",
    "area_under_learning_curve",
    "raw_pixel_knn_scores",
    "validation_auroc",
]
