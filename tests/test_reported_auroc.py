"""Honest evaluation: the image AUROC anomalib reports equals the AUROC of the models' raw scores.

anomalib normalises scores with statistics learned on the validation split and clamps them to
[0, 1]; clamping can tie test scores that lie outside the validation range and change the
AUROC. The metric users read must be the AUROC of the raw scores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine
from cli_utils import digits_folder_datamodule
from lightning.pytorch import seed_everything
from model_utils import tiny_model
from sklearn.metrics import roc_auc_score

from anomalib_firm.models.components.evaluation.post_processing import OrderPreservingPostProcessor


def test_normalisation_is_strictly_increasing_onto_the_unit_interval() -> None:
    raw = torch.tensor([-1e6, -50.0, 0.0, 1.0, 2.0, 2.5, 3.0, 4.0, 60.0, 1e6])
    stats = {"norm_min": torch.tensor(1.0), "norm_max": torch.tensor(3.0), "threshold": torch.tensor(2.0)}
    normalised = OrderPreservingPostProcessor._normalize(raw, **stats)
    assert bool((normalised.diff() > 0).all())  # no ties, same order
    assert bool(((normalised > 0) & (normalised < 1)).all())
    assert normalised[4].item() == 0.5  # the threshold
    # d = (s - 2) / 2: the validation range ends (d = -+0.5) map to 0.25 and 0.75, s = 2.5 (d = 0.25) to 2/3.
    torch.testing.assert_close(normalised[[3, 5, 6]], torch.tensor([0.25, 0.5 + 0.25 / 1.5, 0.75]))
    # Without validation statistics: the same map around 0 with unit scale (never raw scores, which
    # anomalib's AUROC would pass through a sigmoid: MCL's distances ~100 would all tie at 1).
    nan = torch.tensor(float("nan"))
    squashed = OrderPreservingPostProcessor._normalize(raw, nan, nan, nan)
    assert bool((squashed.diff() > 0).all())
    torch.testing.assert_close(squashed, 0.5 + raw / (2 * (raw.abs() + 0.5)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "overrides"),
    [("firm", {"head_layers": 3}), ("mcl", {}), ("msc", {"lr": 0.001})],
    ids=["firm", "mcl", "msc"],
)
@pytest.mark.parametrize("epochs", [1, 0], ids=["trained", "untrained"])  # 0: no validation statistics
def test_reported_auroc_is_the_raw_score_auroc(
    digits_folder: Path, tmp_path: Path, name: str, overrides: dict, epochs: int
) -> None:
    seed_everything(0, verbose=False)
    model = tiny_model(name, **overrides)
    datamodule = digits_folder_datamodule(digits_folder, train_batch_size=16)
    engine = Engine(max_epochs=epochs, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model=model, datamodule=datamodule)
    reported = engine.test(model=model, datamodule=datamodule, verbose=False)[0]["image_AUROC"]
    scores, labels = model.score_loader(datamodule.test_dataloader())
    assert len(set(labels.tolist())) == 2
    assert reported == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-6)
