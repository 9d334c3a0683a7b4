"""What a checkpoint holds beyond the weights, and how a resumed run continues as the uninterrupted one.

Saving records the model's name (a checkpoint of another model fails clearly when loaded, see
:mod:`.checkpoint_network`) and the training state Lightning does not restore: the random streams as
they were after the epoch's last training step (every epoch starts from them, so validation and
scorer fits never shift training's draws; every rank's under DDP), the NaN guard's pending loss and
whether the scorer is stale. Loading checks the checkpoint's network against the model's and, when
resuming a fit (``--ckpt_path last.ckpt``), restores that state. Testing after a resumed fit keeps
the weights training ended with (see :meth:`CheckpointStateMixin._keeps_weights_trained_here`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from anomalib_firm.models.components.lifecycle import distributed
from anomalib_firm.models.components.lifecycle.checkpoint_network import (
    CHECKPOINT_MODEL_KEY,
    match_checkpoint_network,
    model_name,
)
from anomalib_firm.models.components.lifecycle.contract import LifecycleHost
from anomalib_firm.models.components.lifecycle.random_state import capture_random_state, restore_random_state

logger = logging.getLogger(__name__)

#: Checkpoint key of the training state Lightning does not restore (random streams, NaN guard, scorer flag).
RESUME_STATE_KEY = "anomalib_firm_resume"


class CheckpointStateMixin(LifecycleHost):
    """Lightning hooks that save and restore the resume state (see the module docstring).

    The host calls :meth:`_init_checkpoint_state` in its ``__init__`` and :meth:`_note_fit_start` when a
    fit starts; it owns ``_pending_loss`` (the NaN guard's last loss) and ``_scorer_stale`` (trained
    since the last scorer fit), which are saved and restored here.
    """

    _pending_loss: torch.Tensor | None
    _scorer_stale: bool

    def _init_checkpoint_state(self) -> None:
        # Random streams after the last training step of the latest epoch (restored when an epoch starts).
        self._epoch_end_random_state: dict[str, Any] | None = None
        self._epoch_end_step = -1
        self._random_state_restored = False  # set by a resume until the next training step
        self._resumed_from: str | None = None  # checkpoint this fit resumed from
        self._trained_until_step: int | None = None  # global step at the end of this process's fit

    def _note_fit_start(self) -> None:
        """Remember the checkpoint this fit resumes from (``None``: a fresh fit)."""
        ckpt_path = getattr(self.trainer, "ckpt_path", None)
        self._resumed_from = str(ckpt_path) if ckpt_path else None

    def on_train_epoch_start(self) -> None:
        """Start from the random streams left by the previous epoch's last training step (not shifted by validation).

        Lightning creates the epoch's data iterator (the shuffling draws its seed) after this hook, except
        in the first epoch of a run, where it does so before; a resumed run therefore restores the
        checkpoint's streams when the checkpoint is loaded, and not again here.
        """
        if self._epoch_end_random_state is not None and not self._random_state_restored:
            restore_random_state(self._epoch_end_random_state)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the epoch's last training step: keep the random streams for the next epoch and checkpoints."""
        del outputs, batch
        self._random_state_restored = False
        loop = self.trainer.fit_loop.epoch_loop
        if loop.batch_progress.is_last_batch or batch_idx + 1 >= self.trainer.num_training_batches:
            self._epoch_end_random_state = capture_random_state()
            self._epoch_end_step = self.global_step

    def on_train_end(self) -> None:
        """Remember where this process's training ended (see :meth:`_keeps_weights_trained_here`)."""
        self._trained_until_step = self.global_step

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the model's name and the training state a resumed run needs (all ``weights_only``-safe).

        The random state is the one after the last training step of the epoch (every rank's, under DDP),
        so a run resumed from an epoch-end checkpoint draws what the uninterrupted run draws.
        """
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_MODEL_KEY] = model_name(self)
        state = (
            self._epoch_end_random_state
            if self._epoch_end_random_state is not None and self._epoch_end_step == self.global_step
            else capture_random_state()
        )
        states: list[dict[str, Any] | None] = [state]
        if distributed.world_size() > 1:
            states = [None] * distributed.world_size()
            torch.distributed.all_gather_object(states, state)
        pending = self._pending_loss
        checkpoint[RESUME_STATE_KEY] = {
            "random_states": states,
            "pending_loss": None if pending is None else pending.detach().cpu(),
            "scorer_stale": self._scorer_stale,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Before a checkpoint's weights are loaded: fail if it is another model's or its network differs.

        See :func:`~anomalib_firm.models.components.lifecycle.checkpoint_network.match_checkpoint_network`
        (a model with ``rebuild_network`` is rebuilt instead when the user left those settings at their defaults).
        When resuming a fit, the random streams, NaN guard and scorer state are restored as well.
        """
        if self._keeps_weights_trained_here(checkpoint):
            return
        match_checkpoint_network(self, checkpoint)
        resume = checkpoint.get(RESUME_STATE_KEY)
        if resume is not None and self._fitting():
            states = resume["random_states"]
            own = distributed.rank()
            self._epoch_end_random_state = states[own] if own < len(states) else states[0]
            self._epoch_end_step = int(checkpoint.get("global_step", -1))
            restore_random_state(self._epoch_end_random_state)  # before the first epoch's data iterator
            self._random_state_restored = True
            pending = resume["pending_loss"]
            self._pending_loss = None if pending is None else pending.to(self.device)
            self._scorer_stale = bool(resume["scorer_stale"])
        super().on_load_checkpoint(checkpoint)

    def _fitting(self) -> bool:
        trainer = getattr(self, "_trainer", None)
        return trainer is not None and trainer.state.fn == "fit"

    def _keeps_weights_trained_here(self, checkpoint: dict[str, Any]) -> bool:
        """Testing after a resumed fit: keep the weights training ended with instead of the older checkpoint's.

        ``anomalib train --ckpt_path last.ckpt`` resumes from that checkpoint, then tests with the same
        ``ckpt_path``: that would score the weights of the epoch training resumed from, not the final ones
        (the uninterrupted run tests its final weights). The checkpoint's state dict and callback states
        (the post-processor's threshold) are replaced by the current ones, so Lightning's load keeps them.
        """
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.state.fn != "test" or self._resumed_from is None:
            return False
        if str(trainer.ckpt_path) != self._resumed_from or self._trained_until_step is None:
            return False
        if int(checkpoint.get("global_step", 0)) >= self._trained_until_step:
            return False
        logger.info(
            "%s: testing the weights training ended with (step %d), not those of %s (step %d) it resumed from.",
            self.name,
            self._trained_until_step,
            self._resumed_from,
            int(checkpoint.get("global_step", 0)),
        )
        checkpoint["state_dict"] = self.state_dict()
        if "callbacks" in checkpoint:
            checkpoint["callbacks"] = {callback.state_key: callback.state_dict() for callback in trainer.callbacks}
        return True
