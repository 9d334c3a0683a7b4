"""Does a checkpoint's network fit the model it is loaded into? Say which settings to pass, or rebuild.

``anomalib test|predict|export --ckpt_path`` (and ``train`` resuming from one) first build the model
from the command line, then load the checkpoint's weights into it. A checkpoint trained with another
backbone would fail deep inside ``load_state_dict`` with lists of keys. FIRM, MCL and MSC call
:func:`match_checkpoint_network` from ``on_load_checkpoint``, before the weights are loaded:

- the checkpoint is of another model (``--model MCL --ckpt_path firm.ckpt``): a :class:`ValueError`
  names both models (the model is recorded under :data:`CHECKPOINT_MODEL_KEY` by ``on_save_checkpoint``;
  for older checkpoints it is recognised from the scorer's weights);
- the network fits (same weight names, same parameter shapes): nothing happens;
- it does not, and every setting behind the difference was left at its default (what a command
  without ``--model.backbone`` builds): a model that can rebuild its network (``rebuild_network``,
  MSC) is rebuilt with the checkpoint's settings for its ``network_arguments`` left at their defaults;
- otherwise a :class:`ValueError` names the settings the checkpoint was trained with, the ones the
  model was built with, and the arguments to pass.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shlex
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from anomalib_firm.console import InputError
from anomalib_firm.models.components.lifecycle.contract import RebuildsNetwork
from anomalib_firm.registry import alias_name

logger = logging.getLogger(__name__)

#: Settings compared first when a model declares no ``network_arguments``.
DEFAULT_NETWORK_ARGUMENTS = ("backbone",)

#: Checkpoint key holding the name of the model that saved it (``Firm``, ``Mcl``, ``Msc``).
CHECKPOINT_MODEL_KEY = "anomalib_firm_model"

#: State-dict keys only one model's network has, to recognise checkpoints that do not record their model.
_MODEL_MARKERS = (("model.gaussians.", "Mcl"), ("model.center", "Msc"), ("model.bank.features", "Firm"))


def model_name(module: nn.Module) -> str:
    """The model's name as recorded in checkpoints (an alias such as ``FIRM`` gives its class's, ``Firm``)."""
    name = getattr(module, "name", None)
    return name if isinstance(name, str) else type(module).__name__


def checkpoint_model(checkpoint: Mapping[str, Any]) -> str | None:
    """Name of the model that saved ``checkpoint``: recorded, else recognised from its weights; ``None`` if unknown."""
    recorded = checkpoint.get(CHECKPOINT_MODEL_KEY)
    if isinstance(recorded, str):
        return recorded
    keys = list(checkpoint.get("state_dict") or {})
    for prefix, name in _MODEL_MARKERS:
        if any(key.startswith(prefix) for key in keys):
            return name
    return None


def match_checkpoint_model(module: nn.Module, checkpoint: Mapping[str, Any]) -> None:
    """Fail, naming both models, when ``checkpoint`` was saved by another model than ``module``.

    Raises:
        ValueError: e.g. ``--model MCL --ckpt_path firm.ckpt``.
    """
    saved = checkpoint_model(checkpoint)
    own = model_name(module)
    if saved is None or saved == own:
        return
    trainer = getattr(module, "_trainer", None)
    path = getattr(trainer, "ckpt_path", None)
    where = f"The checkpoint {path}" if path else "The checkpoint"
    msg = (
        f"{where} holds a {saved} model, not a {own}: load it with `--model {saved}` (or "
        f"{alias_name(saved)}) on the anomalib command line, or {saved}.load_from_checkpoint(...) in Python; "
        f"a {own} needs a checkpoint saved by a {own}."
    )
    raise InputError(msg)


def network_mismatch(module: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str = "model.") -> str | None:
    """What keeps ``state_dict`` from loading into ``module``'s network, or ``None`` if it fits.

    Compares the names of the entries under ``prefix`` and the shapes of the parameters. Buffer shapes
    are not compared: a feature bank or a centre grows with the data and is resized when loaded.

    Args:
        module: The Lightning model (its ``state_dict`` keys start with ``prefix`` for the network).
        state_dict: The checkpoint's ``state_dict``.
        prefix: Keys of the network (the torch model is the ``model`` attribute).

    Returns:
        A short description (counts and a first example), or ``None``.
    """
    own = module.state_dict()
    own_keys = {key for key in own if key.startswith(prefix)}
    saved_keys = {key for key in state_dict if key.startswith(prefix)}
    parameters = {name for name, _ in module.named_parameters()}
    missing = sorted(own_keys - saved_keys)
    unexpected = sorted(saved_keys - own_keys)
    wrong_shape = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
        for key in sorted(own_keys & saved_keys & parameters)
        if tuple(state_dict[key].shape) != tuple(own[key].shape)
    ]
    problems = [
        f"{description} ({len(keys)}, e.g. {keys[0]})"
        for description, keys in (
            ("weights this model has but the checkpoint lacks", missing),
            ("weights only the checkpoint has", unexpected),
            ("weights of another shape, checkpoint vs model", wrong_shape),
        )
        if keys
    ]
    return "; ".join(problems) or None


def match_checkpoint_network(module: nn.Module, checkpoint: Mapping[str, Any]) -> None:
    """Make sure the checkpoint's network fits ``module`` before its weights are loaded (see the module docstring).

    Args:
        module: The Lightning model, built with some settings (its ``hparams``). It may define
            ``network_arguments`` (constructor arguments that shape its network) and
            ``rebuild_network(arguments)`` (replace the network by one built with them).
        checkpoint: The loaded checkpoint (``state_dict`` and the ``hyper_parameters`` it was trained with).

    Raises:
        ValueError: The checkpoint is of another model (:func:`match_checkpoint_model`), or the network
            does not fit: the message names the settings of both and what to pass.
    """
    match_checkpoint_model(module, checkpoint)
    state_dict = checkpoint.get("state_dict")
    if state_dict is None:
        return
    problem = network_mismatch(module, state_dict)
    if problem is None:
        return
    saved = dict(checkpoint.get("hyper_parameters") or {})
    built = dict(getattr(module, "hparams", None) or {})
    defaults = _constructor_defaults(type(module))
    rebuilder = module if isinstance(module, RebuildsNetwork) else None
    network_arguments = rebuilder.network_arguments if rebuilder is not None else DEFAULT_NETWORK_ARGUMENTS
    named = _named_differences(saved, built, network_arguments)
    if rebuilder is not None and named and all(_left_at_default(name, built, defaults) for name in named):
        arguments = {
            name: saved[name] if name in saved and _left_at_default(name, built, defaults) else built[name]
            for name in network_arguments
            if name in built
        }
        rebuilder.rebuild_network(arguments)
        taken = ", ".join(f"{name}={saved[name]!r}" for name in named)
        logger.info(
            "%s: the checkpoint's network has %s; rebuilt with the checkpoint's settings.", _name(module), taken
        )
        problem = network_mismatch(module, state_dict)
        if problem is None:
            return
        named = _named_differences(saved, dict(getattr(module, "hparams", None) or {}), network_arguments)
    raise InputError(_message(module, problem, named, can_rebuild=rebuilder is not None))


def _constructor_defaults(cls: type) -> dict[str, Any]:
    """Default value of every constructor argument that has one."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def _plain(value: Any) -> Any:
    """A value in a comparable form: paths as strings, tuples as lists."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _left_at_default(name: str, built: Mapping[str, Any], defaults: Mapping[str, Any]) -> bool:
    return name in built and name in defaults and _plain(built[name]) == _plain(defaults[name])


def _named_differences(
    saved: Mapping[str, Any], built: Mapping[str, Any], network_arguments: tuple[str, ...]
) -> dict[str, tuple[Any, Any]]:
    """Settings that differ, ``{name: (checkpoint's, model's)}``: the network arguments, else all that differ."""
    differing = {
        name: (saved[name], built[name])
        for name in saved
        if name in built and _plain(saved[name]) != _plain(built[name])
    }
    return {name: values for name, values in differing.items() if name in network_arguments} or differing


def _cli_value(value: Any) -> str:
    """How jsonargparse reads ``value`` from the command line."""
    value = _plain(value)
    return value if isinstance(value, str) else json.dumps(value)


def _name(module: nn.Module) -> str:
    return type(module).__name__


def _message(
    module: nn.Module,
    problem: str,
    named: Mapping[str, tuple[Any, Any]],
    can_rebuild: bool,
) -> str:
    trainer = getattr(module, "_trainer", None)
    path = getattr(trainer, "ckpt_path", None)
    where = f"The checkpoint {path}" if path else "The checkpoint"
    name = _name(module)
    if not named:
        return (
            f"{where} holds another network than this {name} ({problem}), and records no setting that differs "
            f"from this model's: build the {name} with the settings it was trained with."
        )
    trained = ", ".join(f"{key}={saved!r}" for key, (saved, _) in named.items())
    built = ", ".join(f"{key}={own!r}" for key, (_, own) in named.items())
    cli = " ".join(f"--model.{key} {shlex.quote(_cli_value(saved))}" for key, (saved, _) in named.items())
    python = ", ".join(f"{key}={_plain(saved)!r}" for key, (saved, _) in named.items())
    message = (
        f"{where} holds another network than this {name}: it was trained with {trained}, this model was built "
        f"with {built}. Pass the checkpoint's settings: `{cli}` on the anomalib command line, or "
        f"{name}({python}, ...) in Python"
    )
    if can_rebuild:
        message += " (or leave them out: settings left at their defaults are taken from the checkpoint)"
    return message + "."
