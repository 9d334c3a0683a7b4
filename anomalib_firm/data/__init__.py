"""One-vs-rest anomaly-detection data modules for anomalib, held in memory.

Each turns a labelled classification set into an anomaly-detection task: the chosen
class(es) are normal, every other class is anomalous. Training uses the normal classes'
training images; the test split is the whole test set (normal ``0``, others ``1``);
validation is carved from it by anomalib's split modes. Images are decoded once into one
``uint8`` tensor per split and batched with one tensor index; batches are
:class:`~anomalib_firm.data.batch.OneVsRestImageBatch` (an ``ImageBatch`` with
``class_label``).

Data modules:
    - :class:`CIFAR10`, :class:`CIFAR100` (20 super-classes): python pickle batches
    - :class:`MNIST`, :class:`FashionMNIST`: idx files (``.gz`` or not)
    - :class:`Digits`: scikit-learn's bundled 8x8 digits, no file needed
    - :class:`ClassFolder`: any ``<folder>/<class>/<images>`` tree

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_firm.data import FashionMNIST
    >>> datamodule = FashionMNIST(category="sneaker")
"""

from anomalib_firm.data.cifar import CIFAR10, CIFAR100
from anomalib_firm.data.class_folder import ClassFolder
from anomalib_firm.data.digits import Digits
from anomalib_firm.data.mnist import MNIST, FashionMNIST

__all__ = ["CIFAR10", "CIFAR100", "MNIST", "ClassFolder", "Digits", "FashionMNIST"]
