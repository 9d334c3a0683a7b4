"""``anomalib train --trainer.strategy ddp --trainer.devices 2`` on the CPU: one results folder, test, export, scorer.

The slow test runs the stock command with 2 CPU processes (gloo) on a digits Folder tree whose
validation and test splits leave process 1 a last batch that is only the sampler's repeat, then
tests the checkpoint with one process (same image AUROC), exports it and compares its scorer with
the one a single process fits from the same weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_utils import TINY_FIRM, digits_folder_datamodule, folder_data_args, metric, run_anomalib

from anomalib_firm.data.digits import write_digits_folder

DEVICES = 2
BATCH_PER_DEVICE = 8
#: DDP's warning when a parameter's memory format changed after it built its gradient buckets.
GRAD_STRIDES_WARNING = "Grad strides do not match bucket view strides"
#: Evaluation batch of the slow test: its tree's validation split (21 images: 11 for process 1, the
#: last a repeat) ends in a batch of only the repeat; its test split (23: 12, the last a repeat) in
#: a batch of one image and the repeat.
EVAL_BATCH = 5


@pytest.fixture(scope="module")
def odd_digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digit 0 normal: 40 training images, 15 normal and 29 anomalous test images (validation 21, test 23)."""
    root = tmp_path_factory.mktemp("odd_digits")
    write_digits_folder(root, digit=0, size=16, num_train=40, num_test=15, anomalies_per_normal=2)
    sorted((root / "test" / "bad").iterdir())[0].unlink()  # 29 anomalous: odd split sizes
    return root


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
def test_two_process_cli_run_trains_tests_exports_and_fits_the_single_process_scorer(odd_digits_folder, tmp_path):
    from anomalib_firm.models import Firm

    datamodule = digits_folder_datamodule(odd_digits_folder, BATCH_PER_DEVICE)
    datamodule.setup()
    assert (len(datamodule.val_data), len(datamodule.test_data)) == (21, 23)  # see EVAL_BATCH
    data = [*folder_data_args(odd_digits_folder), "--data.eval_batch_size", str(EVAL_BATCH)]
    result = run_anomalib(
        ["train", "--model", "FIRM", *TINY_FIRM, *data,
         "--data.train_batch_size", str(BATCH_PER_DEVICE), "--trainer.max_epochs", "1", "--seed_everything", "0",
         "--trainer.accelerator", "cpu", "--trainer.devices", str(DEVICES), "--trainer.strategy", "ddp"],
        tmp_path,
        warnings=f"ignore,default:{GRAD_STRIDES_WARNING}",
    )  # fmt: skip
    two_processes = metric(result.stdout, "image_AUROC")
    assert 0.5 < two_processes <= 1.0
    # channels_last (bf16 CPUs) is applied in configure_model, before DDP builds its gradient buckets
    assert GRAD_STRIDES_WARNING not in result.stderr
    runs = tmp_path / "results" / "Firm" / "digits"
    assert sorted(path.name for path in runs.iterdir()) == ["latest", "v0"]  # one folder for both processes
    checkpoint = runs / "latest" / "weights" / "lightning" / "model.ckpt"
    # Every test image counted once: one process gives the same AUROC from the checkpoint.
    one_process = run_anomalib(
        ["test", "--model", "FIRM", *TINY_FIRM, *data, "--ckpt_path", str(checkpoint),
         "--trainer.accelerator", "cpu", "--trainer.devices", "1"],
        tmp_path,
    )  # fmt: skip
    assert metric(one_process.stdout, "image_AUROC") == pytest.approx(two_processes, abs=1e-6)

    model = Firm.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    assert model.to_openvino(tmp_path / "export").exists()
    # The bank (and recalibrated BatchNorm statistics) rank 0 fitted and broadcast, against one process
    # fitting them from the same final weights with the global batch (BatchNorm recalibration averages
    # per-batch statistics: rank 0 reads the normal images in batches of devices x per-device batch).
    fitted = {name: buffer.clone() for name, buffer in model.model.named_buffers()}
    datamodule = digits_folder_datamodule(odd_digits_folder, BATCH_PER_DEVICE * DEVICES)
    datamodule.setup()
    model.fit_scorer_from_loader(datamodule.train_dataloader())
    for name, buffer in model.model.named_buffers():
        if buffer.is_floating_point():
            torch.testing.assert_close(buffer, fitted[name], atol=1e-5, rtol=1e-4, msg=name)


def test_scorer_fit_under_ddp_reads_the_normal_images_in_global_batches(digits_folder):
    from anomalib_firm.models.components.lifecycle.scorer_fitting import in_order

    datamodule = digits_folder_datamodule(digits_folder, BATCH_PER_DEVICE)
    datamodule.setup()
    loader = datamodule.train_dataloader()  # shuffling, per-device batches
    global_batches = in_order(loader, DEVICES)
    assert global_batches.batch_size == BATCH_PER_DEVICE * DEVICES
    ordered = [path for batch in global_batches for path in batch.image_path]
    assert ordered == list(datamodule.train_data.samples.image_path)  # every image once, in order
    assert in_order(global_batches) is global_batches  # already in order, scale 1: as given


@pytest.mark.parametrize(
    "error",
    [
        torch.distributed.DistBackendError("[gloo] barrier failed: Connection closed by peer [127.0.0.1]:29500"),
        RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1"),
    ],
)
def test_a_process_stopped_by_another_ones_failure_says_so_in_one_line(error, capsys):
    from types import SimpleNamespace

    from anomalib_firm._register import PEER_FAILED_MESSAGE, _quiet_for_our_models

    def collective_fails(cli: object) -> None:
        raise error

    model = SimpleNamespace(class_path="anomalib_firm.models.Firm")
    cli = SimpleNamespace(config={"subcommand": "train", "train": {"model": model}})
    with pytest.raises(SystemExit) as stopped:
        _quiet_for_our_models(collective_fails)(cli)
    assert stopped.value.code == 1
    assert capsys.readouterr().err == f"Error: {PEER_FAILED_MESSAGE}\n"


def test_other_runtime_errors_of_a_process_keep_their_traceback():
    from types import SimpleNamespace

    from anomalib_firm._register import _quiet_for_our_models

    def fails(cli: object) -> None:
        raise RuntimeError("min(): Expected reduction dim to be specified")

    model = SimpleNamespace(class_path="anomalib_firm.models.Firm")
    cli = SimpleNamespace(config={"subcommand": "test", "test": {"model": model}})
    with pytest.raises(RuntimeError, match="reduction dim"):
        _quiet_for_our_models(fails)(cli)
