"""The random streams training draws from, as checkpoint-safe values (``torch.load(weights_only=True)``).

Training draws from torch's CPU generator (shuffling, data-loader seeds), the accelerator's
generators (the views made on the device, MCL's partners), NumPy's and Python's global generators
(data-module transforms). :func:`capture_random_state` returns all of them as tensors, lists, ints and
floats only, so a checkpoint holding them still loads with ``weights_only=True``;
:func:`restore_random_state` sets them back; :func:`preserved_random_state` does both around a block
(evaluation that must not shift training's draws).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

#: Keys of a captured state.
_KEYS = ("torch", "cuda", "numpy", "python")


def capture_random_state() -> dict[str, Any]:
    """The current state of torch's (CPU and every CUDA device), NumPy's and Python's global generators."""
    numpy_state = np.random.get_state(legacy=True)
    if not isinstance(numpy_state, tuple):  # legacy=True gives the tuple form
        msg = f"Unexpected NumPy random state {type(numpy_state).__name__}."
        raise TypeError(msg)
    kind, keys, position, has_gauss, cached_gaussian = numpy_state
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), cached_gaussian],
        "python": [int(version), list(python_state), gauss_next],
    }


def restore_random_state(state: dict[str, Any]) -> None:
    """Set the generators back to a :func:`capture_random_state` result.

    CUDA states are restored for as many devices as both the state and this process have.

    Raises:
        ValueError: ``state`` lacks one of the generators.
    """
    missing = [key for key in _KEYS if key not in state]
    if missing:
        msg = f"Random state without {missing}: not written by capture_random_state."
        raise ValueError(msg)
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    version, python_state, gauss_next = state["python"]
    random.setstate((version, tuple(python_state), gauss_next))


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Run a block, then set every generator back to its state before it (also after an exception)."""
    state = capture_random_state()
    try:
        yield
    finally:
        restore_random_state(state)
