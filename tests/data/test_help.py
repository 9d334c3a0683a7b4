"""``anomalib train --data.help <data module>`` lists and describes every argument of every data module.

The common arguments are described once (``OneVsRestDataModule.__init__``'s docstring); a data module's
class docstring describes its own and may override those texts.
"""

from __future__ import annotations

import inspect

import pytest
from jsonargparse import ArgumentParser

from anomalib_firm import data
from anomalib_firm.data.base import OneVsRestDataModule


def _option_help(data_module: type) -> dict[str, str | None]:
    """Option -> description as jsonargparse reads it (``None``: undocumented)."""
    parser = ArgumentParser()
    parser.add_class_arguments(data_module, "data")
    return {
        action.dest.removeprefix("data."): None if action.help in (None, "", "_EMPTY_HELP_") else action.help
        for action in parser._actions
        if action.dest.startswith("data.")
    }


@pytest.mark.parametrize("name", data.__all__)
def test_every_argument_is_listed_and_described(name: str) -> None:
    data_module = getattr(data, name)
    documented = _option_help(data_module)
    expected = [parameter for parameter in inspect.signature(data_module).parameters]
    assert [option for option in documented if not option.endswith(".help")] == expected
    assert [option for option, text in documented.items() if text is None] == []
    common = set(inspect.signature(OneVsRestDataModule).parameters)
    assert common <= set(expected)


def test_own_descriptions_override_the_common_ones() -> None:
    assert "airplane" in str(_option_help(data.CIFAR10)["category"])
    assert "SPLIT_SEED" in str(_option_help(data.Digits)["seed"])
    assert "Batch size of the train loader" in str(_option_help(data.ClassFolder)["train_batch_size"])
