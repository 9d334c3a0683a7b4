"""What a model provides to the shared life cycle, stated in code.

A model is one folder: its Lightning class mixes in
:class:`~anomalib_firm.models.components.lifecycle.contrastive_mixin.ContrastiveAnomalyMixin` and
implements ``training_loss`` and ``fit_scorer`` (the mixin's abstract methods); its torch network
(``self.model``) is a :class:`ContrastiveNetwork`. A model whose network can be rebuilt from a
checkpoint's settings (MSC: another backbone) is a :class:`RebuildsNetwork` as well.

What runs at fit start, in order (``ContrastiveAnomalyMixin.on_fit_start``): the normal set is
checked (enough images; every file readable, already at ``setup``); the run is noted for resuming
(``CheckpointStateMixin``); pretrained weights are loaded once, on every rank, unless a checkpoint
gave the network its weights (``load_pretrained_weights``); the network is prepared for training
(channels_last, bf16 where native, compilation: ``prepare_training``). A model adds its own steps
by overriding ``on_fit_start`` and calling ``super()`` first (MSC: the fixed centre; MCL: the
number of classes).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from anomalib.data import InferenceBatch
from torch import nn

if TYPE_CHECKING:
    from anomalib.models.components import AnomalibModule as _MixedInto
else:
    _MixedInto = object


class ContrastiveNetwork(nn.Module, ABC):
    """The torch network of a model: what the life cycle calls on ``self.model``."""

    @abstractmethod
    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """The training forward path: views ``(V, 3, H, W)`` in [0, 1] -> embeddings ``(V, D)``.

        Also what mixed precision is probed with and what ``training_views`` BatchNorm
        recalibration runs.
        """

    @abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Training mode: the model's own training output; eval mode: ``InferenceBatch(pred_score)`` ``(B,)``."""

    def rotation_features(self, images: torch.Tensor) -> torch.Tensor:
        """The features the scorer is fitted on, for ``normal_images`` BatchNorm recalibration (FIRM, MCL).

        Raises:
            NotImplementedError: For a network without such features (MSC recalibrates nothing).
        """
        msg = f"{type(self).__name__} has no rotation features: use bn_recalibration false or 'training_views'."
        raise NotImplementedError(msg)

    def load_pretrained_weights(self) -> bool:
        """Load the pretrained weights the network was built for, once; True if it loaded now (default: none)."""
        return False


@runtime_checkable
class RebuildsNetwork(Protocol):
    """A Lightning model that can rebuild its network with a checkpoint's settings before loading it."""

    #: Constructor arguments that shape the network (compared with a checkpoint's hyper-parameters).
    network_arguments: tuple[str, ...]

    def rebuild_network(self, arguments: dict[str, Any]) -> None:
        """Replace the network by one built with ``arguments`` (every one of :attr:`network_arguments`)."""


class LifecycleHost(_MixedInto):
    """Base of the life-cycle mixins: ``object`` at run time; to the type checker, the anomalib module they join.

    So the mixins' code is checked against what the host really has (``trainer``, ``log``,
    ``super().on_fit_end()``...) and against this contract: the host's network is a
    :class:`ContrastiveNetwork`.
    """

    model: ContrastiveNetwork

    if TYPE_CHECKING:  # what the mixins provide to one another (each is defined once, in the mixin named)

        def load_pretrained_weights(self) -> bool:
            """ContrastiveAnomalyMixin: load the network's pretrained weights once."""

        def autocast(self) -> contextlib.AbstractContextManager:
            """MixedPrecisionMixin: the training precision's autocast context."""

        def as_input(self, images: torch.Tensor) -> torch.Tensor:
            """MixedPrecisionMixin: images in the training memory format."""
