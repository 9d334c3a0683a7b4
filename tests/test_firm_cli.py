"""FIRM through the stock ``anomalib`` command: train, test, predict, export, benchmark; OpenVINO parity."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_utils import (
    TINY_FIRM,
    digits_folder_datamodule,
    folder_data_args,
    folder_test_images,
    max_openvino_score_difference,
    metric,
    run_anomalib,
    write_digits_folder,
)
from PIL import Image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(digits_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Train once with ``anomalib train --model FIRM``; return (workdir, checkpoint, output)."""
    workdir = tmp_path_factory.mktemp("firm_cli")
    result = run_anomalib(
        ["train", "--model", "FIRM", *TINY_FIRM, *folder_data_args(digits_folder),
         "--trainer.max_epochs", "2", "--seed_everything", "0"],
        workdir,
    )  # fmt: skip
    checkpoints = sorted(workdir.glob("results/Firm/digits/v*/weights/lightning/model.ckpt"))
    assert checkpoints, result.stdout[-2000:]
    return workdir, checkpoints[-1], result.stdout


def test_train_prints_image_metrics(trained):
    _, _, output = trained
    assert 0.8 < metric(output, "image_AUROC") <= 1.0  # digit 0 against the rest: far above chance
    assert "image_F1Score" in output


def _error_message_alone(args: list[str], workdir: Path) -> str:
    """Run a failing ``anomalib`` command; check it exits 1 without a traceback; return its stderr."""
    result = run_anomalib(args, workdir, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    return result.stderr


def test_checkpoint_of_another_network_fails_with_one_message_and_no_traceback(trained, digits_folder):
    workdir, checkpoint, _ = trained
    stderr = _error_message_alone(
        ["test", "--model", "FIRM", *TINY_FIRM, "--model.backbone", "resnet34_cifar",
         *folder_data_args(digits_folder), "--ckpt_path", str(checkpoint)],
        workdir,
    )  # fmt: skip
    assert "holds another network than this FIRM" in stderr
    assert "backbone='resnet18_cifar'" in stderr  # the checkpoint's setting, to pass


def test_diverged_training_fails_with_one_message_and_no_traceback(digits_folder, tmp_path):
    stderr = _error_message_alone(
        ["train", "--model", "FIRM", *TINY_FIRM, "--model.lr", "1e30", *folder_data_args(digits_folder),
         "--trainer.max_epochs", "2"],
        tmp_path,
    )  # fmt: skip
    assert "Error: Firm: the training loss became nan" in stderr
    assert "Lower the learning rate (model.lr)" in stderr


def test_test_and_predict_from_checkpoint(trained, digits_folder):
    workdir, checkpoint, output = trained
    tested = run_anomalib(
        ["test", "--model", "Firm", *TINY_FIRM, *folder_data_args(digits_folder), "--ckpt_path", str(checkpoint)],
        workdir,
    )
    # Same weights, same bank (stored in the checkpoint): the same AUROC as right after training.
    assert metric(tested.stdout, "image_AUROC") == pytest.approx(metric(output, "image_AUROC"), abs=1e-4)
    predicted = run_anomalib(
        ["predict", "--model", "anomalib_firm.models.Firm", *TINY_FIRM,
         "--data", str(digits_folder / "test" / "bad"), "--ckpt_path", str(checkpoint)],
        workdir,
    )  # fmt: skip
    assert "Traceback" not in predicted.stderr
    images = len(list((digits_folder / "test" / "bad").glob("*.png")))
    assert f"Firm: {images} images predicted" in predicted.stdout  # each image's score and label, then the CSV
    assert len((workdir / "results" / "Firm" / "latest" / "predictions.csv").read_text().splitlines()) == images + 1


def test_checkpoint_loads_weights_only_and_records_model_and_resume_state(trained):
    _, checkpoint, _ = trained
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)  # nothing allow-listed
    assert saved["anomalib_firm_model"] == "Firm"
    resume = saved["anomalib_firm_resume"]
    assert set(resume) == {"random_states", "pending_loss", "scorer_stale"}
    assert set(resume["random_states"][0]) == {"torch", "cuda", "numpy", "python"}


def test_checkpoint_of_firm_given_to_mcl_names_both_models(trained, digits_folder):
    # What `anomalib test --model MCL --ckpt_path firm.ckpt` runs, in this process (no CLI start-up).
    from anomalib.engine import Engine

    from anomalib_firm.models import MCL

    workdir, checkpoint, _ = trained
    engine = Engine(default_root_dir=workdir / "mismatch", logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="holds a Firm model, not a Mcl"):
        engine.test(MCL(image_size=16, visualizer=False), datamodule=digits_folder_datamodule(digits_folder, 16),
                    ckpt_path=checkpoint)  # fmt: skip


def test_openvino_export_matches_torch(trained, digits_folder, monkeypatch):
    from anomalib_firm.models import Firm

    workdir, checkpoint, _ = trained
    monkeypatch.chdir(workdir)  # OpenVINOInferencer writes ./openvino_cache
    exported = run_anomalib(
        ["export", "--model", "FIRM", *TINY_FIRM, "--export_type", "openvino",
         "--ckpt_path", str(checkpoint), "--input_size", "[16,16]"],
        workdir,
    )  # fmt: skip
    assert "takes images of exactly 16x16 pixels" in exported.stdout + exported.stderr  # what a fixed size means
    xml = checkpoint.parents[1] / "openvino" / "model.xml"  # beside the checkpoint, in its run folder
    assert f"Exported model to {xml}" in exported.stdout + exported.stderr
    model = Firm.load_from_checkpoint(checkpoint)
    assert max_openvino_score_difference(xml, model, folder_test_images(digits_folder)) < 1e-4
    first_export = xml.read_bytes()
    compressed = run_anomalib(
        ["export", "--model", "FIRM", *TINY_FIRM, "--export_type", "openvino",
         "--ckpt_path", str(checkpoint), "--compression_type", "FP16"],
        workdir,
    )  # fmt: skip
    fp16 = xml.with_name("model_fp16.xml")  # its own file: the full-precision export is still there
    assert f"Exported model to {fp16}" in compressed.stdout + compressed.stderr
    assert xml.read_bytes() == first_export


def test_benchmark_accepts_firm(digits_folder, tmp_path):
    config = tmp_path / "benchmark.yaml"
    config.write_text(
        f"""
accelerator: cpu
benchmark:
  seed: 0
  model:
    class_path: Firm
    init_args: {{image_size: 16, head_hidden_dim: 64, head_layers: 3, max_epochs: 1, visualizer: false}}
  data:
    class_path: Folder
    init_args:
      name: digits
      root: {digits_folder}
      normal_dir: train/good
      abnormal_dir: test/bad
      normal_test_dir: test/good
      train_batch_size: 16
      num_workers: 0
"""
    )
    run_anomalib(["benchmark", "--config", str(config)], tmp_path)
    results = list(tmp_path.glob("runs/benchmark/*/results.csv"))
    assert results, (tmp_path / "runs" / "pipeline.log").read_text()[-3000:]
    text = results[0].read_text()
    assert "Firm" in text
    assert "image_AUROC" in text


def test_data_module_setting_error_is_one_message_although_jsonargparse_rewraps_it(tmp_path):
    """A data module's InputError raised while the CLI builds it (jsonargparse quotes it in its own error)."""
    missing = tmp_path / "nowhere"
    stderr = _error_message_alone(
        ["train", "--model", "FIRM", *TINY_FIRM, "--data", "anomalib_firm.data.ClassFolder",
         "--data.root", str(missing), "--data.category", "good", "--trainer.max_epochs", "1"],
        tmp_path,
    )  # fmt: skip
    assert f"Error: Folder '{missing}' does not exist." in stderr
    assert "Union subtypes" not in stderr


def test_a_16_bit_image_in_a_folder_tree_is_one_message_before_training(tmp_path):
    """anomalib's Folder would read it saturated (white): refused, naming the file, nothing trained."""
    root = write_digits_folder(tmp_path / "data", num_train=8, num_test=4)
    target = sorted((root / "train" / "good").glob("*.png"))[0]
    Image.fromarray(np.linspace(0, 10000, 16 * 16).reshape(16, 16).astype(np.uint16)).save(target)
    stderr = _error_message_alone(
        ["train", "--model", "FIRM", *TINY_FIRM, *folder_data_args(root), "--trainer.max_epochs", "1"], tmp_path
    )
    assert f"'{target}' (I;16)" in stderr
    assert "Nothing was trained" in stderr
    assert len([line for line in stderr.splitlines() if "Error" in line]) == 1
    assert not list(tmp_path.glob("results/**/*.ckpt"))


def test_a_missing_data_folder_is_one_message(tmp_path):
    """anomalib's own Folder error, translated for our models (the other data errors: tests/test_console.py)."""
    root = write_digits_folder(tmp_path / "data", num_train=8, num_test=4)
    shutil.rmtree(root / "test" / "good")
    stderr = _error_message_alone(
        ["train", "--model", "FIRM", *TINY_FIRM, *folder_data_args(root), "--trainer.max_epochs", "1"], tmp_path
    )
    assert f"Error: Path does not exist: {root}/test/good: check --data.root and the folder options" in stderr
    assert len([line for line in stderr.splitlines() if "Error" in line]) == 1  # beside anomalib's INFO lines
