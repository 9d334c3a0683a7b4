"""Start-up hook that plugs our models and data modules into an unmodified anomalib.

``anomalib_firm.pth`` in site-packages imports this module at every Python start-up, so it
imports nothing but :mod:`sys` and :mod:`importlib.machinery` (no torch, no anomalib). It
puts a finder at the front of ``sys.meta_path`` that only reacts to three anomalib modules:
once the real module has executed, it calls the matching function of
:mod:`anomalib_firm._register`, which adds our classes to anomalib's name spaces. Why:
anomalib reads no entry points, and ``anomalib train --model FIRM`` resolves short names
only among classes already imported when the command line is parsed.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec, PathFinder

#: module -> function of ``anomalib_firm._register`` to call once it is loaded. Our own
#: packages are listed too: when one of them is imported first, it makes anomalib load while
#: it is itself half-initialised; registering again once it is complete covers that order.
_TRIGGERS = {
    "anomalib.models": "register_models",
    "anomalib.data": "register_data",
    "anomalib.cli.cli": "patch_cli",
    "anomalib_firm.models.image.firm": "register_models",
    "anomalib_firm.models.image.msc": "register_models",
    "anomalib_firm.models.image.mcl": "register_models",
    "anomalib_firm.data": "register_data",
}


class _ChainedLoader:
    """Runs the real loader, then our registration function for that module."""

    def __init__(self, loader: object, hook_name: str) -> None:
        self._loader = loader
        self._hook_name = hook_name

    def create_module(self, spec: ModuleSpec) -> object:
        return self._loader.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module: object) -> None:
        if module.__name__ == "anomalib.models":  # type: ignore[attr-defined]
            # anomalib's own modules raise deprecation warnings while they load: nothing a user can act on.
            from anomalib_firm.console import quiet_anomalib_import

            with quiet_anomalib_import():
                self._loader.exec_module(module)  # type: ignore[attr-defined]
        else:
            self._loader.exec_module(module)  # type: ignore[attr-defined]
        # Fully executed: say so now (importlib would only after we return), so that the
        # registration can tell complete modules from half-loaded ones.
        module.__spec__._initializing = False  # type: ignore[attr-defined]
        from anomalib_firm import _register

        getattr(_register, self._hook_name)()

    def __getattr__(self, name: str) -> object:  # e.g. get_source, is_package for tracebacks
        return getattr(self._loader, name)


class AnomalibWatcher:
    """Meta-path finder that wraps the loaders of the modules in ``_TRIGGERS``."""

    @staticmethod
    def find_spec(fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        hook_name = _TRIGGERS.get(fullname)
        if hook_name is None and fullname.startswith("anomalib_firm.") and fullname != "anomalib_firm._register":
            hook_name = "register_pending"  # any of our modules: finish a registration deferred meanwhile
        if hook_name is None:
            return None
        spec = PathFinder.find_spec(fullname, path, target)  # type: ignore[arg-type]
        if spec is None or spec.loader is None:
            return None
        spec.loader = _ChainedLoader(spec.loader, hook_name)  # type: ignore[assignment]
        return spec

    @staticmethod
    def invalidate_caches() -> None:
        """Nothing cached."""


def install() -> None:
    """Put the watcher first on ``sys.meta_path`` (once), or register at once if too late."""
    if any(isinstance(finder, AnomalibWatcher) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, AnomalibWatcher())  # type: ignore[arg-type]
    already_loaded = [name for name in _TRIGGERS if name in sys.modules]
    if already_loaded:
        from anomalib_firm import _register

        for name in already_loaded:
            getattr(_register, _TRIGGERS[name])()


install()
