"""The options every model shares are described once (base_module) and reach each model's ``--model.help``."""

from __future__ import annotations

import inspect

import pytest
from jsonargparse import ArgumentParser

from anomalib_firm import models
from anomalib_firm.models.components.lifecycle.argument_docs import SHARED_ARGUMENTS, argument_entries, with_arguments
from anomalib_firm.models.components.lifecycle.contrastive_mixin import ContrastiveAnomalyMixin, mixin_arguments


def _help(model: type) -> dict[str, str]:
    parser = ArgumentParser()
    parser.add_class_arguments(model, "model")
    return {action.dest.removeprefix("model."): str(action.help) for action in parser._actions}


@pytest.mark.parametrize("name", ["Firm", "Msc", "Mcl"])
def test_shared_options_described_in_every_model(name: str) -> None:
    model = getattr(models, name)
    described = _help(model)
    assert set(SHARED_ARGUMENTS) <= set(inspect.signature(model).parameters)
    assert "anomalib's image visualizer" in described["visualizer"]
    assert "embeddings of all ranks are gathered" in described["gather_distributed"]
    assert "imposed by the model" in described["max_epochs"]


def test_model_docstring_keeps_its_own_description_and_sections() -> None:
    doc = """Summary.

    Args:
        visualizer: Our own text.
        lr: Learning rate.

    Example:
        >>> pass
    """
    shared = argument_entries(ContrastiveAnomalyMixin.__doc__ or "")
    completed = with_arguments(doc, [shared["compile_step"]])
    entries = argument_entries(completed)
    assert list(entries) == ["visualizer", "lr", "compile_step"]
    assert entries["visualizer"] == "    visualizer: Our own text."
    assert completed.rstrip().endswith(">>> pass")


def test_mixin_arguments_picks_the_mixins_own() -> None:
    arguments = {"self": None, "image_size": 32, "lr": 0.1, "visualizer": False}
    assert mixin_arguments(arguments) == {"image_size": 32, "visualizer": False}


def test_frozen_modules_is_described_once_and_msc_keeps_its_own() -> None:
    for model in (models.Firm, models.Mcl):
        assert "kept as loaded, never trained" in _help(model)["frozen_modules"]
    assert "the paper's rule" in _help(models.Msc)["frozen_modules"]  # MSC's preset, described by MSC
