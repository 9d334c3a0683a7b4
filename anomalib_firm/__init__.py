"""Contrastive anomaly detection (FIRM, MSC, MCL) as anomalib models.

Importing this package imports nothing else: it is loaded at every Python start-up by
``anomalib_firm.pth`` (see :mod:`anomalib_firm._hook`). The models live in
:mod:`anomalib_firm.models`, the one-vs-rest data modules in :mod:`anomalib_firm.data`.
"""

__version__ = "0.1.0"
