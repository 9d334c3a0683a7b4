"""A callback for the resume test: stop making progress at the start of an epoch, so the test can SIGKILL the run.

It is given to ``anomalib train`` as ``--trainer.callbacks resume_helpers.PauseAtEpoch`` (``tests/``
on ``PYTHONPATH``). It draws no random number, so the paused run trains exactly as one without it.
"""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer


class PauseAtEpoch(Callback):
    """When epoch ``epoch`` (0-based) is about to start, write ``marker`` and sleep until killed.

    Every checkpoint of the epochs before has been written by then.
    """

    def __init__(self, epoch: int, marker: str) -> None:
        self.epoch = epoch
        self.marker = marker

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Pause (forever) at the chosen epoch."""
        del pl_module
        if trainer.current_epoch == self.epoch:
            Path(self.marker).write_text(str(trainer.global_step))
            while True:
                time.sleep(1)
