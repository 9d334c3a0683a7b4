"""Every registered model is complete: its folder's files, its configs, its README, its help text."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from anomalib_firm.models.components.lifecycle.argument_docs import argument_entries
from anomalib_firm.models.components.lifecycle.contract import ContrastiveNetwork
from anomalib_firm.registry import MODELS

ROOT = Path(__file__).parents[1]
FOLDER_FILES = ("__init__.py", "lightning_model.py", "torch_model.py", "loss.py", "views.py", "README.md")
PROTOCOLS = ("quick", "medium", "full")


@pytest.mark.parametrize(("name", "package"), MODELS.items())
def test_every_registered_model_has_its_folder_configs_readme_and_help(name: str, package: str) -> None:
    folder = ROOT.joinpath(*package.split("."))
    assert [file for file in FOLDER_FILES if not (folder / file).is_file()] == []
    key = name.lower()
    assert (ROOT / "configs" / "models" / f"{key}.yaml").is_file()
    missing = [p for p in PROTOCOLS if not (ROOT / "configs" / "benchmark" / f"fashion_mnist_{p}_{key}.yaml").is_file()]
    assert missing == []
    readme = (folder / "README.md").read_text()
    assert readme.startswith("# ")
    assert len(readme.splitlines()) > 10
    model = getattr(importlib.import_module(package), name)
    documented = argument_entries(model.__doc__ or "")
    options = [option for option in inspect.signature(model.__init__).parameters if option != "self"]
    assert [option for option in options if option not in documented] == []  # --model.help describes each


@pytest.mark.parametrize(("name", "package"), MODELS.items())
def test_every_registered_network_states_the_contract(name: str, package: str) -> None:
    torch_model = importlib.import_module(f"{package}.torch_model")
    networks = [
        value
        for value in vars(torch_model).values()
        if inspect.isclass(value) and value.__module__ == torch_model.__name__ and issubclass(value, ContrastiveNetwork)
    ]
    assert len(networks) == 1, f"{name}: its torch_model.py defines one ContrastiveNetwork"
