"""Honest evaluation: the image AUROC anomalib reports equals the AUROC of the models' raw scores.

anomalib normalises scores with statistics learned on the validation split and clamps them to
[0, 1]; clamping can tie test scores that lie outside the validation range and change the
AUROC. The metric users read must be the AUROC of the raw scores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from anomalib.engine import Engine
from cli_utils import digits_folder_datamodule
from lightning.pytorch import seed_everything
from sklearn.metrics import roc_auc_score

from anomalib_firm.models import Firm, Mcl


@pytest.mark.slow
@pytest.mark.parametrize(
    "build",
    [
        lambda: Firm(image_size=16, head_hidden_dim=64, head_layers=3, visualizer=False),
        lambda: Mcl(backbone="resnet18_cifar", image_size=16, head_hidden_dim=64, visualizer=False),
    ],
    ids=["firm", "mcl"],
)
def test_reported_auroc_is_the_raw_score_auroc(digits_folder: Path, tmp_path: Path, build) -> None:
    seed_everything(0, verbose=False)
    model = build()
    datamodule = digits_folder_datamodule(digits_folder, train_batch_size=16)
    engine = Engine(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model=model, datamodule=datamodule)
    reported = engine.test(model=model, datamodule=datamodule, verbose=False)[0]["image_AUROC"]
    scores, labels = model.score_loader(datamodule.test_dataloader())
    assert len(set(labels.tolist())) == 2
    assert reported == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-6)
