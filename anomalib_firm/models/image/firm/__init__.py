"""FIRM: Focused In-distribution Representation Modeling."""

from .lightning_model import FIRM, Firm
from .loss import FirmLoss
from .torch_model import FirmModel

__all__ = ["FIRM", "Firm"]
