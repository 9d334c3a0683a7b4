"""``anomalib train --trainer.strategy ddp --trainer.devices 2`` on the CPU: one results folder, test, export, scorer.

The slow test runs the stock command with 2 CPU processes (gloo) on the digits Folder tree, then exports
the checkpoint and compares its scorer with the one a single process fits from the same weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_utils import TINY_FIRM, digits_folder_datamodule, folder_data_args, metric, run_anomalib

DEVICES = 2
BATCH_PER_DEVICE = 8
#: DDP's warning when a parameter's memory format changed after it built its gradient buckets.
GRAD_STRIDES_WARNING = "Grad strides do not match bucket view strides"


def test_processes_of_extra_devices_use_rank_zeros_results_folder(digits_folder, tmp_path, monkeypatch):
    """What each process of a DDP ``anomalib train`` does first: rank 0 makes ``vN``, the others take it."""
    import anomalib.cli.cli  # noqa: F401  (imported: our start-up hook adapts the CLI and the engine)
    from anomalib.engine import Engine
    from model_utils import tiny_model

    model, datamodule = tiny_model("firm"), digits_folder_datamodule(digits_folder, BATCH_PER_DEVICE)
    folders = {}
    for local_rank in (None, "1"):  # rank 0 (Lightning sets no LOCAL_RANK before it launches), then rank 1
        if local_rank is None:
            monkeypatch.delenv("LOCAL_RANK", raising=False)
        else:
            monkeypatch.setenv("LOCAL_RANK", local_rank)
        engine = Engine(default_root_dir=tmp_path)
        engine._setup_workspace(model=model, datamodule=datamodule, versioned_dir=True)  # as Engine.train does
        folders[local_rank] = Path(engine._cache.args["default_root_dir"]).resolve()
    assert folders["1"] == folders[None] == (tmp_path / "Firm" / "digits" / "v0").resolve()
    assert sorted(path.name for path in (tmp_path / "Firm" / "digits").iterdir()) == ["latest", "v0"]


@pytest.mark.slow
def test_two_process_cli_run_trains_tests_exports_and_fits_the_single_process_scorer(digits_folder, tmp_path):
    from anomalib_firm.models import Firm

    result = run_anomalib(
        ["train", "--model", "FIRM", *TINY_FIRM, *folder_data_args(digits_folder),
         "--data.train_batch_size", str(BATCH_PER_DEVICE), "--trainer.max_epochs", "1", "--seed_everything", "0",
         "--trainer.accelerator", "cpu", "--trainer.devices", str(DEVICES), "--trainer.strategy", "ddp"],
        tmp_path,
        warnings=f"ignore,default:{GRAD_STRIDES_WARNING}",
    )  # fmt: skip
    assert 0.5 < metric(result.stdout, "image_AUROC") <= 1.0
    # channels_last (bf16 CPUs) is applied in configure_model, before DDP builds its gradient buckets
    assert GRAD_STRIDES_WARNING not in result.stderr
    runs = tmp_path / "results" / "Firm" / "digits"
    assert sorted(path.name for path in runs.iterdir()) == ["latest", "v0"]  # one folder for both processes
    checkpoint = runs / "latest" / "weights" / "lightning" / "model.ckpt"

    model = Firm.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    assert model.to_openvino(tmp_path / "export").exists()
    # The bank (and recalibrated BatchNorm statistics) rank 0 fitted and broadcast, against one process
    # fitting them from the same final weights with the global batch (BatchNorm recalibration averages
    # per-batch statistics: rank 0 reads the normal images in batches of devices x per-device batch).
    fitted = {name: buffer.clone() for name, buffer in model.model.named_buffers()}
    datamodule = digits_folder_datamodule(digits_folder, BATCH_PER_DEVICE * DEVICES)
    datamodule.setup()
    model.fit_scorer_from_loader(datamodule.train_dataloader())
    for name, buffer in model.model.named_buffers():
        if buffer.is_floating_point():
            torch.testing.assert_close(buffer, fitted[name], atol=1e-5, rtol=1e-4, msg=name)


def test_scorer_fit_under_ddp_reads_the_normal_images_in_global_batches(digits_folder):
    from anomalib_firm.models.components.scorer_fitting import in_order

    datamodule = digits_folder_datamodule(digits_folder, BATCH_PER_DEVICE)
    datamodule.setup()
    loader = datamodule.train_dataloader()  # shuffling, per-device batches
    global_batches = in_order(loader, DEVICES)
    assert global_batches.batch_size == BATCH_PER_DEVICE * DEVICES
    ordered = [path for batch in global_batches for path in batch.image_path]
    assert ordered == list(datamodule.train_data.samples.image_path)  # every image once, in order
    assert in_order(global_batches) is global_batches  # already in order, scale 1: as given
