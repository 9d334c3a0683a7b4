"""Start-up hook that plugs our models and data modules into an unmodified anomalib.

Why: anomalib reads no entry points, and ``anomalib train --model FIRM`` resolves short names
only among classes already imported when the command line is parsed; ``anomalib.models.get_model``
and ``anomalib.data.get_datamodule`` look names up on those modules.

How (the whole mechanism):

1. ``anomalib_firm.pth`` in site-packages imports this module at every Python start-up, so it
   imports nothing but :mod:`sys` and :mod:`importlib.machinery` (no torch, no anomalib).
2. It puts a finder at the front of ``sys.meta_path`` that wraps the loader of three anomalib
   modules (:data:`HOST_MODULES`) and of every ``anomalib_firm.*`` module: once the real module
   has executed, :func:`anomalib_firm._register.after_import` is called with its name.
3. That function registers whatever can be registered at that moment (the names come from the
   one list, :mod:`anomalib_firm.registry`): our classes on ``anomalib.models`` and
   ``anomalib.data`` once those exist, and the CLI's seeding once ``anomalib.cli.cli`` exists.
   While one of our own modules is still executing (it is what made anomalib load), importing
   our model packages would re-enter it half-initialised, so registration waits: it completes
   when that module of ours finishes, since its loader calls ``after_import`` too. Nothing is
   remembered in between: every call reads the state from ``sys.modules``.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec, PathFinder

#: anomalib's modules after whose loading we register (models, data modules, CLI seeding).
HOST_MODULES = ("anomalib.models", "anomalib.data", "anomalib.cli.cli")

#: Our modules that registration itself imports at start-up (never wrapped: nothing to register after them).
_START_UP_MODULES = ("anomalib_firm._register", "anomalib_firm.registry")


class _ChainedLoader:
    """Runs the real loader, then :func:`anomalib_firm._register.after_import` for that module."""

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> object:
        return self._loader.create_module(spec)  # type: ignore[attr-defined]  # the wrapped object is an importlib loader

    def exec_module(self, module: object) -> None:
        name = module.__name__  # type: ignore[attr-defined]  # a module object
        if name == "anomalib.models":
            # anomalib's own modules raise deprecation warnings while they load: nothing a user can act on.
            from anomalib_firm.console import quiet_anomalib_import

            with quiet_anomalib_import():
                self._loader.exec_module(module)  # type: ignore[attr-defined]  # the wrapped object is an importlib loader
        else:
            self._loader.exec_module(module)  # type: ignore[attr-defined]  # the wrapped object is an importlib loader
        from anomalib_firm import _register

        _register.after_import(name)

    def __getattr__(self, name: str) -> object:  # e.g. get_source, is_package for tracebacks
        return getattr(self._loader, name)


class AnomalibWatcher:
    """Meta-path finder that wraps the loaders of :data:`HOST_MODULES` and of our own modules."""

    @staticmethod
    def find_spec(fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        ours = fullname.startswith("anomalib_firm.") and fullname not in _START_UP_MODULES
        if not ours and fullname not in HOST_MODULES:
            return None
        spec = PathFinder.find_spec(fullname, path, target)  # type: ignore[arg-type]  # the finder protocol passes these through
        if spec is None or spec.loader is None:
            return None
        spec.loader = _ChainedLoader(spec.loader)  # type: ignore[assignment]  # a loader by duck typing
        return spec

    @staticmethod
    def invalidate_caches() -> None:
        """Nothing cached."""


def install() -> None:
    """Put the watcher first on ``sys.meta_path`` (once), or register at once if anomalib is already loaded."""
    if any(isinstance(finder, AnomalibWatcher) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, AnomalibWatcher())
    already_loaded = [name for name in HOST_MODULES if name in sys.modules]
    if already_loaded:
        from anomalib_firm import _register

        for name in already_loaded:
            _register.after_import(name)


install()
