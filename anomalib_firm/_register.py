"""Adds our models and data modules to anomalib's name spaces (called by :mod:`anomalib_firm._hook`).

The names come from :mod:`anomalib_firm.registry`. Once registered:

- ``anomalib train --model FIRM`` / ``--model Firm`` resolve (jsonargparse matches the class
  ``__name__`` of imported :class:`AnomalibModule` subclasses, case-sensitively: ``FIRM``
  is the alias subclass of ``Firm``);
- ``anomalib.models.get_model("firm")`` and ``anomalib benchmark`` configs with
  ``class_path: Firm`` or ``anomalib_firm.models.Firm`` work (the latter needs the module in
  ``anomalib.models.ALLOWED_MODULES``);
- ``anomalib.data.get_datamodule`` and ``--data`` find our data modules.

:func:`patch_cli` makes ``anomalib <cmd> --seed_everything N`` with our models actually seed
(anomalib 2.7 declares the option but never applies it), runs commands with our models quietly
(:func:`anomalib_firm.console.quiet_cli_run`) and, under DDP, keeps every process of a run in one
results folder (:func:`_share_rank_zero_workspace`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from anomalib_firm.registry import DATA_PACKAGE, model_packages

_OUR_PREFIX = "anomalib_firm."
#: What a DDP process prints when it stops because another process of the run failed.
PEER_FAILED_MESSAGE = "another process of this multi-device run failed (its error is printed above); this one stopped."


def after_import(loaded: str) -> None:
    """Register whatever can be registered now that module ``loaded`` has executed (idempotent).

    Waits while another of our modules is still executing (see :mod:`anomalib_firm._hook`):
    that module's own completion calls again.
    """
    if loaded == "anomalib.cli.cli":
        patch_cli()
    if any(name.startswith(_OUR_PREFIX) and name != loaded and _is_executing(name) for name in list(sys.modules)):
        return
    models = _executed_host("anomalib.models", loaded)
    if models is not None:
        models.ALLOWED_MODULES.add("anomalib_firm.models")  # class paths ``anomalib_firm.models.Firm``
        _set_names(models, model_packages())
    data = _executed_host("anomalib.data", loaded)
    if data is not None:
        _set_names(data, dict.fromkeys(importlib.import_module(DATA_PACKAGE).__all__, DATA_PACKAGE))


def _is_executing(module_name: str) -> bool:
    """True while ``module_name`` is in ``sys.modules`` but its code has not finished running.

    Reads (never writes) the flag importlib itself consults for that: ``__spec__._initializing``.
    """
    spec = getattr(sys.modules.get(module_name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _executed_host(host_name: str, loaded: str) -> ModuleType | None:
    """The module ``host_name`` of anomalib if it has finished executing, else ``None``.

    ``loaded`` is the module that just executed: complete, although importlib still flags it.
    """
    host = sys.modules.get(host_name)
    if host is None or (host_name != loaded and _is_executing(host_name)):
        return None
    return host


def _set_names(host: ModuleType, packages: dict[str, str]) -> None:
    """Set each ``class name -> package`` of ours on ``host`` (and in its ``__all__``) unless already there."""
    for class_name, package in packages.items():
        if class_name in vars(host):
            continue
        setattr(host, class_name, getattr(importlib.import_module(package), class_name))
        if hasattr(host, "__all__") and class_name not in host.__all__:
            host.__all__.append(class_name)


def _is_ours(config: Any) -> bool:
    """True when a CLI command's configuration names one of our models (``--model FIRM``, ``anomalib_firm...``)."""
    return str(getattr(config.get("model"), "class_path", "")).startswith(_OUR_PREFIX)


def patch_cli() -> None:
    """For our models: apply ``--seed_everything`` before the CLI builds model and data; run quietly.

    Commands with anomalib's own models run exactly as without this package.
    """
    from anomalib.cli.cli import AnomalibCLI

    original = AnomalibCLI.before_instantiate_classes
    if getattr(original, "_anomalib_firm_seeded", False):
        return

    def before_instantiate_classes(self: AnomalibCLI) -> None:
        config = self.config.get(str(self.config.get("subcommand")), self.config)
        seed = config.get("seed_everything")
        if _is_ours(config) and isinstance(seed, int) and not isinstance(seed, bool):
            from lightning.pytorch import seed_everything

            seed_everything(seed, workers=True)
        original(self)

    before_instantiate_classes._anomalib_firm_seeded = True  # type: ignore[attr-defined]  # a marker on the function: patched once
    AnomalibCLI.before_instantiate_classes = before_instantiate_classes  # type: ignore[method-assign]  # the start-up hook's patch

    for method_name in ("instantiate_classes", "_run_subcommand"):
        setattr(AnomalibCLI, method_name, _quiet_for_our_models(getattr(AnomalibCLI, method_name)))
    _share_rank_zero_workspace()


def _share_rank_zero_workspace() -> None:
    """Under Lightning's DDP launch, the processes of the extra devices use the results folder rank 0 made.

    ``anomalib train --trainer.strategy ddp --trainer.devices N`` runs the command again in one process
    per extra device (``LOCAL_RANK`` 1 .. N-1, started by rank 0 once it has created
    ``results/<model>/<data>/<category>/vK`` and pointed ``latest`` at it). anomalib's engine would
    create ``vK+1``, ``vK+2``, ... in them and point ``latest`` at those empty folders; for our models
    these processes take rank 0's folder (``latest``) instead.
    """
    import os

    from anomalib.engine import Engine

    original = Engine._setup_workspace
    if getattr(original, "_anomalib_firm_rank_zero", False):
        return

    def _setup_workspace(self: Engine, model: Any, *args: Any, **kwargs: Any) -> None:
        ours = type(model).__module__.startswith(_OUR_PREFIX)
        if kwargs.get("versioned_dir") and ours and int(os.environ.get("LOCAL_RANK") or 0) > 0:
            kwargs["versioned_dir"] = False  # anomalib 2.7 always passes it by keyword
        original(self, model, *args, **kwargs)

    _setup_workspace._anomalib_firm_rank_zero = True  # type: ignore[attr-defined]  # a marker on the function: patched once
    Engine._setup_workspace = _setup_workspace  # type: ignore[method-assign]  # the start-up hook's patch


def _quiet_for_our_models(method: Callable[[Any], None]) -> Callable[[Any], None]:
    """``method`` of the CLI, run under :func:`anomalib_firm.console.quiet_cli_run` when the model is one of ours.

    An :class:`~anomalib_firm.console.InputError` (bad images, settings, a checkpoint of another network; also
    when jsonargparse re-raises it as its own error while building the model or data module) or
    :class:`~anomalib_firm.console.TrainingDivergedError` (NaN loss) is printed as its message alone and the
    command exits with status 1. Under DDP, a process whose collective fails because another process
    exited (which prints its own error) says so in one line instead of a second traceback; anomalib's
    errors about the data folders (missing, no images) are one line too.
    """

    def wrapper(self: Any) -> None:
        if not _is_ours(self.config.get(str(self.config.get("subcommand")), self.config)):
            method(self)
            return
        from anomalib_firm.console import (
            TrainingDivergedError,
            data_error_message,
            input_errors_made,
            quiet_cli_run,
            quoted_input_error,
            stopped_by_another_process,
        )

        if method.__name__ == "_run_subcommand" and self.subcommand == "export":
            _export_beside_checkpoint(self.config_init["export"])
        with quiet_cli_run(), input_errors_made() as made:
            try:
                method(self)
            except TrainingDivergedError as error:  # the message says what to do: no traceback
                print(f"Error: {error}", file=sys.stderr)
                raise SystemExit(1) from None
            except ValueError as error:  # ours, or jsonargparse's quoting ours (raised building model or data)
                ours = quoted_input_error(error, made)
                if ours is None:
                    raise
                print(f"Error: {ours}", file=sys.stderr)
                raise SystemExit(1) from None
            except (RuntimeError, FileNotFoundError) as error:
                message = PEER_FAILED_MESSAGE if stopped_by_another_process(error) else data_error_message(error)
                if message is None:
                    raise
                print(f"Error: {message}", file=sys.stderr)
                raise SystemExit(1) from None

    return wrapper


def _export_beside_checkpoint(config: Any) -> None:
    """``anomalib export`` of our models without ``--export_root``: write into the checkpoint's run folder.

    anomalib writes every export to ``results/weights/<format>/model.*`` whatever the checkpoint, so
    exporting a second model (or a second run) silently replaced the first. A checkpoint
    at ``<run>/weights/lightning/<name>.ckpt`` (where ``anomalib train`` saves it) exports to
    ``<run>/weights/<format>/``, beside it; another checkpoint to ``<its folder>/<its name>/weights/<format>/``.
    Compressed OpenVINO exports have their own file names (the models' ``to_openvino``).
    """
    if config.get("export_root") is not None or not config.get("ckpt_path"):
        return
    checkpoint = Path(config["ckpt_path"])
    in_run = checkpoint.parent.name == "lightning" and checkpoint.parent.parent.name == "weights"
    config["export_root"] = checkpoint.parents[2] if in_run else checkpoint.parent / checkpoint.stem
