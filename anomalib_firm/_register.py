"""Adds our models and data modules to anomalib's name spaces (called by :mod:`anomalib_firm._hook`).

After :func:`register_models`:

- ``anomalib train --model FIRM`` / ``--model Firm`` resolve (jsonargparse matches the class
  ``__name__`` of imported :class:`AnomalibModule` subclasses, case-sensitively: ``FIRM``
  is an alias subclass of ``Firm``);
- ``anomalib.models.get_model("firm")`` and ``anomalib benchmark`` configs with
  ``class_path: Firm`` or ``anomalib_firm.models.Firm`` work (the latter needs the module in
  ``anomalib.models.ALLOWED_MODULES``).

:func:`register_data` does the same for ``anomalib.data.get_datamodule`` and ``--data``.
:func:`patch_cli` makes ``anomalib <cmd> --seed_everything N`` actually seed (anomalib 2.7
declares the option but never applies it) and runs commands with our models quietly
(:func:`anomalib_firm.console.quiet_cli_run`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

_MODEL_MODULES = (
    "anomalib_firm.models.image.firm",
    "anomalib_firm.models.image.msc",
    "anomalib_firm.models.image.mcl",
)
_DATA_MODULE = "anomalib_firm.data"


def _export_names(target_module_name: str, source_module_name: str) -> None:
    """Set every name of ``source.__all__`` on ``target``.

    Does nothing while either module is still loading (the hook calls again once it is
    complete), and nothing for a source module that does not exist.
    """
    target = sys.modules.get(target_module_name)
    if target is None or _is_loading(target_module_name) or _is_loading(source_module_name):
        return
    try:
        source = importlib.import_module(source_module_name)
    except ModuleNotFoundError as error:
        if error.name != source_module_name:
            raise
        return
    for name in getattr(source, "__all__", ()):
        setattr(target, name, getattr(source, name))
        if hasattr(target, "__all__") and name not in target.__all__:
            target.__all__.append(name)


def _is_loading(module_name: str) -> bool:
    """True while ``module_name`` is being executed (in ``sys.modules`` but not initialised)."""
    module = sys.modules.get(module_name)
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _inside_our_import() -> bool:
    """True while one of our own modules is being executed."""
    return any(name.startswith("anomalib_firm.") and _is_loading(name) for name in list(sys.modules))


#: A model registration was deferred by :func:`register_models` until our import completes.
_models_pending = False


def register_models() -> None:
    """Expose our models on ``anomalib.models`` and allow ``anomalib_firm.models.*`` class paths."""
    models = sys.modules.get("anomalib.models")
    if models is None:
        return
    allowed_modules = getattr(models, "ALLOWED_MODULES", None)  # not there yet early in its own loading
    if allowed_modules is not None:
        allowed_modules.add("anomalib_firm.models")
    # When one of our own modules (e.g. a shared component) is what made anomalib load, importing
    # the model packages now would re-enter it half-initialised: register only those already
    # loaded; the others register themselves when they finish loading (they are hook triggers).
    inside_our_import = _inside_our_import()
    global _models_pending
    _models_pending = False
    for module_name in _MODEL_MODULES:
        if inside_our_import and module_name not in sys.modules:
            _models_pending = True
            continue
        _export_names("anomalib.models", module_name)


def register_pending() -> None:
    """Finish a model registration deferred by :func:`register_models`, once our import completed."""
    if _models_pending and not _inside_our_import():
        register_models()


def register_data() -> None:
    """Expose our one-vs-rest data modules on ``anomalib.data``."""
    _export_names("anomalib.data", _DATA_MODULE)


def patch_cli() -> None:
    """Apply an integer ``--seed_everything`` before the CLI instantiates model and data; run our models quietly."""
    from anomalib.cli.cli import AnomalibCLI

    original = AnomalibCLI.before_instantiate_classes
    if getattr(original, "_anomalib_firm_seeded", False):
        return

    def before_instantiate_classes(self: AnomalibCLI) -> None:
        seed = self.config.get(str(self.config.get("subcommand")), self.config).get("seed_everything")
        if isinstance(seed, int) and not isinstance(seed, bool):
            from lightning.pytorch import seed_everything

            seed_everything(seed, workers=True)
        original(self)

    before_instantiate_classes._anomalib_firm_seeded = True  # type: ignore[attr-defined]
    AnomalibCLI.before_instantiate_classes = before_instantiate_classes  # type: ignore[method-assign]

    for method_name in ("instantiate_classes", "_run_subcommand"):
        setattr(AnomalibCLI, method_name, _quiet_for_our_models(getattr(AnomalibCLI, method_name)))


def _quiet_for_our_models(method: Callable[[Any], None]) -> Callable[[Any], None]:
    """``method`` of the CLI, run under :func:`anomalib_firm.console.quiet_cli_run` when the model is one of ours."""

    def wrapper(self: Any) -> None:
        config = self.config.get(str(self.config.get("subcommand")), self.config)
        class_path = str(getattr(config.get("model"), "class_path", ""))
        if not class_path.startswith("anomalib_firm."):
            method(self)
            return
        from anomalib_firm.console import quiet_cli_run

        with quiet_cli_run():
            method(self)

    return wrapper
