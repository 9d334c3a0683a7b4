"""MCL: Masked Contrastive Learning with Self-Ensemble Inference."""

from .lightning_model import MCL, Mcl

__all__ = ["MCL", "Mcl"]
