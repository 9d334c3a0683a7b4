"""``val_every_n_epochs``: validation (and its scorer refit) only where asked, always at the last epoch."""

from __future__ import annotations

import pytest
from anomalib.engine import Engine

from anomalib_firm.data import Digits
from anomalib_firm.models import Firm


def _tiny_firm(**kwargs) -> Firm:
    return Firm(image_size=8, head_hidden_dim=16, head_layers=2, visualizer=False, **kwargs)


@pytest.mark.parametrize(("val_every_n_epochs", "expected_fits"), [(None, 2), (2, 1)])
def test_scorer_refit_once_per_validation(tmp_path, monkeypatch, val_every_n_epochs, expected_fits):
    model = _tiny_firm(max_epochs=2, val_every_n_epochs=val_every_n_epochs)
    fits: list[int] = []
    original = model.fit_scorer
    monkeypatch.setattr(model, "fit_scorer", lambda images: (fits.append(model.current_epoch), original(images)))
    datamodule = Digits(category=0, max_train_images=16, max_test_images=40, train_batch_size=8, seed=0)
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    assert model.trainer.current_epoch == 2
    assert fits == list(range(2))[-expected_fits:]  # validated at the last epoch either way


@pytest.mark.parametrize(("max_epochs", "val_every_n_epochs"), [(5, 2), (4, 0)])
def test_last_epoch_must_be_validated(max_epochs, val_every_n_epochs):
    with pytest.raises(ValueError, match="val_every_n_epochs"):
        _tiny_firm(max_epochs=max_epochs, val_every_n_epochs=val_every_n_epochs)
