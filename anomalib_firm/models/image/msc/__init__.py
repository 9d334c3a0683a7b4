"""MSC: Mean-Shifted Contrastive loss for anomaly detection (Reiss and Hoshen)."""

from .lightning_model import MSC, Msc

__all__ = ["MSC", "Msc"]
