"""FIRM: Focused In-distribution Representation Modeling."""

from .lightning_model import FIRM, Firm

__all__ = ["FIRM", "Firm"]
