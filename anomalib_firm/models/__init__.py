"""Anomalib models of this package: FIRM, MSC, MCL (each also under its upper-case alias)."""

from anomalib_firm.models.image.firm import FIRM, Firm

__all__ = ["FIRM", "Firm"]
