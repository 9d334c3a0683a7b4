"""FIRM, MCL and MSC runs killed with SIGKILL after epoch 1 and resumed end as the uninterrupted runs.

Same seed, CPU: the final weights, the bank and the test scores must be equal (the random streams,
the learning-rate schedule, the NaN guard, the scorer state and MSC's centre are restored from the
checkpoint).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_utils import TINY_FIRM, folder_data_args, folder_test_images, metric, run_anomalib

from anomalib_firm.models import Firm, Mcl, Msc

pytestmark = pytest.mark.slow

EPOCHS = 3
KILL_AT_EPOCH = 1  # killed when epoch 1 (0-based) starts: one epoch done and checkpointed


#: CLI name, tiny network settings and LightningModule class of each model under test.
MODELS = {
    "FIRM": (TINY_FIRM, Firm),
    "MCL": (["--model.backbone", "resnet18_cifar", "--model.image_size", "16", "--model.head_hidden_dim", "64",
             "--model.visualizer", "false"], Mcl),
    "MSC": (["--model.backbone", "resnet18", "--model.weights", "random", "--model.image_size", "16",
             "--model.lr", "0.001", "--model.visualizer", "false"], Msc),
}  # fmt: skip


def _train_args(model: str, digits_folder: Path) -> list[str]:
    return ["train", "--model", model, *MODELS[model][0], *folder_data_args(digits_folder),
            "--trainer.max_epochs", str(EPOCHS), "--seed_everything", "0"]  # fmt: skip


def _popen(args: list[str], cwd: Path) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("anomalib")), *args]
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, env.get("PYTHONPATH")]))
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _checkpoint(workdir: Path) -> Path:
    checkpoints = sorted(workdir.glob("results/*/digits/v*/weights/lightning/model.ckpt"))
    assert checkpoints, f"no checkpoint under {workdir}"
    return checkpoints[-1]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_killed_and_resumed_run_ends_as_the_uninterrupted_run(model, digits_folder, tmp_path):
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full_dir.mkdir()
    killed_dir.mkdir()
    marker = tmp_path / "paused"
    pause = ["--trainer.callbacks", "resume_helpers.PauseAtEpoch",
             "--trainer.callbacks.epoch", str(KILL_AT_EPOCH), "--trainer.callbacks.marker", str(marker)]  # fmt: skip
    # Both at once (2 cores): the uninterrupted run and the one to kill.
    full = _popen(_train_args(model, digits_folder), full_dir)
    killed = _popen([*_train_args(model, digits_folder), *pause], killed_dir)
    deadline = time.monotonic() + 600
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), killed.communicate()[1][-3000:] if killed.poll() is not None else "timed out"
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    checkpoint = _checkpoint(killed_dir)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["global_step"] == int(marker.read_text()) > 0  # the epoch-1 checkpoint, nothing later

    resumed = run_anomalib([*_train_args(model, digits_folder), "--ckpt_path", str(checkpoint)], killed_dir)
    full_stdout, full_stderr = full.communicate(timeout=600)
    assert full.returncode == 0, full_stderr[-3000:]

    final_full = torch.load(_checkpoint(full_dir), map_location="cpu", weights_only=True)
    final_resumed = torch.load(_checkpoint(killed_dir), map_location="cpu", weights_only=True)
    assert final_resumed["global_step"] == final_full["global_step"] > saved["global_step"]
    assert final_resumed["state_dict"].keys() == final_full["state_dict"].keys()
    for name, tensor in final_full["state_dict"].items():  # weights, BatchNorm statistics, bank, thresholds
        torch.testing.assert_close(
            final_resumed["state_dict"][name], tensor, atol=1e-6, rtol=0, equal_nan=True, msg=name
        )
    # The test stage of `anomalib train --ckpt_path`: the final weights' scores, as the uninterrupted run's.
    for name in ("image_AUROC", "image_F1Score"):  # F1: the post-processor's threshold too
        assert metric(resumed.stdout, name) == metric(full_stdout, name)

    images = folder_test_images(digits_folder)
    module = MODELS[model][1]
    scores = [module.load_from_checkpoint(_checkpoint(d)).eval()(images).pred_score for d in (full_dir, killed_dir)]
    torch.testing.assert_close(scores[1], scores[0], atol=1e-6, rtol=0)
