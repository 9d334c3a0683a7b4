"""A checkpoint of another network than the model built: FIRM and MCL fail at once, naming the settings to pass.

(MSC, which also rebuilds a default-built network from the checkpoint, is tested through Lightning
in ``test_msc_model.py``.) The checkpoints here are what Lightning saves: the model's ``state_dict``
and the ``hyper_parameters`` it was built with.
"""

from __future__ import annotations

from typing import Any

import pytest
from model_utils import random_training_batch, tiny_model

from anomalib_firm.models.components.lifecycle.checkpoint_network import network_mismatch


def _checkpoint(model: Any) -> dict[str, Any]:
    return {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}


def test_firm_checkpoint_of_another_backbone_names_both_and_the_arguments():
    checkpoint = _checkpoint(tiny_model("firm", backbone="resnet18_cifar"))
    model = tiny_model("firm", backbone="resnet34_cifar")
    with pytest.raises(ValueError, match="holds another network than this Firm") as error:
        model.on_load_checkpoint(checkpoint)
    message = str(error.value)
    assert "trained with backbone='resnet18_cifar'" in message
    assert "built with backbone='resnet34_cifar'" in message
    assert "`--model.backbone resnet18_cifar`" in message
    assert "Firm(backbone='resnet18_cifar', ...)" in message
    assert "leave them out" not in message  # FIRM does not rebuild its network


def test_mcl_checkpoint_with_another_head_names_the_differing_settings():
    checkpoint = _checkpoint(tiny_model("mcl", head_hidden_dim=64))
    model = tiny_model("mcl", head_hidden_dim=32)
    assert "of another shape" in network_mismatch(model, checkpoint["state_dict"])
    with pytest.raises(ValueError, match="head_hidden_dim=64") as error:
        model.on_load_checkpoint(checkpoint)
    assert "`--model.head_hidden_dim 64`" in str(error.value)


def test_matching_checkpoint_loads_and_one_without_settings_says_so():
    trained = tiny_model("firm")
    model = tiny_model("firm")
    model.on_load_checkpoint(_checkpoint(trained))
    model.load_state_dict(trained.state_dict())
    assert network_mismatch(model, trained.state_dict()) is None

    bare = {"state_dict": tiny_model("firm", head_layers=3).state_dict()}
    with pytest.raises(ValueError, match="records no setting") as error:
        model.on_load_checkpoint(bare)
    assert "weights only the checkpoint has" in str(error.value)


@pytest.mark.parametrize(
    ("saved", "built", "recorded"),
    [("firm", "mcl", True), ("mcl", "msc", True), ("msc", "firm", True), ("mcl", "firm", False)],
)
def test_checkpoint_of_another_model_names_both(saved, built, recorded):
    trained = tiny_model(saved, with_center=True)
    trained.fit_scorer_from_loader([random_training_batch(6, seed=0)])  # the scorer's weights mark the model
    checkpoint = _checkpoint(trained)
    if recorded:
        trained.on_save_checkpoint(checkpoint)
    model = tiny_model(built)
    names = {"firm": "Firm", "mcl": "Mcl", "msc": "Msc"}
    with pytest.raises(ValueError, match=f"holds a {names[saved]} model, not a {names[built]}"):
        model.on_load_checkpoint(checkpoint)
