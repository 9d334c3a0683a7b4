"""Test helpers: a tiny real data set as a Folder tree, and the stock ``anomalib`` command in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from anomalib_firm.data.digits import write_digits_folder as write_digits

if TYPE_CHECKING:
    from anomalib.data import Folder

# Small network settings so that a CLI run takes seconds on a 2-core CPU.
TINY_FIRM = [
    "--model.image_size", "16",
    "--model.head_hidden_dim", "64",
    "--model.head_layers", "3",
    "--model.visualizer", "false",
]  # fmt: skip


def folder_data_args(root: Path) -> list[str]:
    """``--data`` arguments for the digits Folder tree of ``conftest.write_digits_folder``."""
    return [
        "--data", "anomalib.data.Folder",
        "--data.name", "digits",
        "--data.root", str(root),
        "--data.normal_dir", "train/good",
        "--data.abnormal_dir", "test/bad",
        "--data.normal_test_dir", "test/good",
        "--data.train_batch_size", "16",
        "--data.num_workers", "0",
        "--data.seed", "0",  # the same validation/test split in every command
    ]  # fmt: skip


def digits_folder_datamodule(root: Path, train_batch_size: int, **kwargs: Any) -> Folder:
    """The digits Folder tree as an anomalib ``Folder`` data module (the Python twin of ``folder_data_args``)."""
    from anomalib.data import Folder

    return Folder(
        name="digits",
        root=root,
        normal_dir="train/good",
        abnormal_dir="test/bad",
        normal_test_dir="test/good",
        train_batch_size=train_batch_size,
        num_workers=0,
        seed=0,
        **kwargs,
    )


def run_anomalib(
    args: list[str], cwd: Path, check: bool = True, warnings: str = "ignore"
) -> subprocess.CompletedProcess:
    """Run ``anomalib <args>`` in ``cwd`` with the same interpreter; return the finished process.

    ``warnings`` is its ``PYTHONWARNINGS`` (all ignored unless a test looks for one).
    """
    command = [str(Path(sys.executable).with_name("anomalib")), *args]
    env = {**os.environ, "PYTHONWARNINGS": warnings, "COLUMNS": "200"}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=900, check=False)
    if check and result.returncode != 0:
        tail = f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        raise AssertionError(f"anomalib {' '.join(args)} failed ({result.returncode}):\n{tail}")
    return result


#: sitecustomize.py for :func:`network_blocked_environment`: every Internet connection fails, and is logged.
_NETWORK_GUARD = """
import os
import socket

_LOG = os.environ["ANOMALIB_FIRM_NETWORK_LOG"]
_LOCAL = {None, "localhost", "127.0.0.1", "::1"}
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _refuse(what):
    with open(_LOG, "a") as log:
        log.write(what + "\\n")
    raise OSError(101, "Network is unreachable (test guard): " + what)


def _guarded(original):
    def connect(self, address):
        if self.family != getattr(socket, "AF_UNIX", None) and address[0] not in _LOCAL:
            _refuse(f"connect {address!r}")
        return original(self, address)

    return connect


def getaddrinfo(host, *args, **kwargs):
    if host not in _LOCAL:
        _refuse(f"resolve {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex = _guarded(_connect), _guarded(_connect_ex)
socket.getaddrinfo = getaddrinfo
"""


def network_blocked_environment(directory: Path) -> dict[str, str]:
    """Environment variables under which a Python process cannot reach the Internet and has no cached weights.

    A ``sitecustomize`` module (on ``PYTHONPATH``) makes every non-local connection and host lookup
    fail with ``OSError`` and appends it to ``directory/network.log`` (see :func:`network_attempts`);
    ``TORCH_HOME`` and ``HF_HOME`` point to empty folders, so no weights come from a cache either.
    """
    guard = directory / "network_guard"
    guard.mkdir(parents=True, exist_ok=True)
    (guard / "sitecustomize.py").write_text(_NETWORK_GUARD)
    for cache in ("torch_home", "hf_home"):
        (directory / cache).mkdir(exist_ok=True)
    python_path = os.pathsep.join(filter(None, [str(guard), os.environ.get("PYTHONPATH")]))
    return {
        "PYTHONPATH": python_path,
        "ANOMALIB_FIRM_NETWORK_LOG": str(directory / "network.log"),
        "TORCH_HOME": str(directory / "torch_home"),
        "HF_HOME": str(directory / "hf_home"),
    }


#: Hosts of usage telemetry, not downloads: OpenVINO's (``openvino_telemetry``) reports to Google Analytics.
TELEMETRY_HOSTS = ("google-analytics.com",)


def network_attempts(directory: Path) -> list[str]:
    """The connections and host lookups refused under :func:`network_blocked_environment`, in order.

    Attempts to reach :data:`TELEMETRY_HOSTS` are left out: they fail quietly and fetch nothing.
    """
    log = directory / "network.log"
    attempts = log.read_text().splitlines() if log.exists() else []
    return [attempt for attempt in attempts if not any(host in attempt for host in TELEMETRY_HOSTS)]


def metric(output: str, name: str) -> float:
    """Read a metric from the test table anomalib prints (``│ image_AUROC │ 0.98 │``)."""
    match = re.search(rf"{name}\s*│\s*([0-9.]+)", output)
    if match is None:
        raise AssertionError(f"{name} not found in output:\n{output[-3000:]}")
    return float(match.group(1))


def write_digits_folder(root: Path, normal_digit: int = 0, num_train: int = 40, num_test: int = 16) -> Path:
    """A tiny digits Folder tree under ``root`` (16 px, as many anomalous as normal test images); return ``root``."""
    write_digits(root, normal_digit, size=16, num_train=num_train, num_test=num_test, anomalies_per_normal=1)
    return root


def folder_test_images(root: Path) -> torch.Tensor:
    """All test PNGs of the digits Folder tree as one (N, 3, H, W) float batch in [0, 1]."""
    paths = sorted((root / "test").glob("*/*.png"))
    images = [torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1) for path in paths]
    return torch.stack(images).float() / 255


def max_openvino_score_difference(xml: Path, model: torch.nn.Module, images: torch.Tensor) -> float:
    """Largest |score| difference between an exported OpenVINO model and the eager model, image by image.

    The f32 hint: OpenVINO would otherwise pick bf16 on CPUs that have it, and the k-NN /
    Mahalanobis scores of near-identical images are closer together than bf16 resolves.
    Call from the folder where ``./openvino_cache`` may be written.
    """
    from anomalib.deploy import OpenVINOInferencer

    with torch.no_grad():
        torch_scores = model.eval()(images).pred_score.numpy()
    inferencer = OpenVINOInferencer(xml, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    openvino_scores = np.concatenate([inferencer.predict(image[None]).pred_score.reshape(-1) for image in images])
    return float(np.abs(openvino_scores - torch_scores).max())
