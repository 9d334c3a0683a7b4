"""MSC model: frozen layers and BatchNorm statistics, the fixed centre, k-NN scoring, the stock CLI and OpenVINO.

The in-process tests train a randomly initialised ResNet-18 at 16 px for one step (seconds on a
CPU; the freezing rules and frozen BatchNorm of the pretrained backbones themselves, EfficientNet-Lite0
included, are tested in ``test_pretrained.py``). When the pretrained weights are loaded (training
start, never into a checkpoint's network) and what a checkpoint of another backbone does are tested
in-process too. The CLI tests (``slow``) train, then test, predict and export through the stock
``anomalib`` command with the network unreachable and ``weights`` at its default.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.engine import Engine
from cli_utils import (
    digits_folder_datamodule,
    folder_data_args,
    folder_test_images,
    max_openvino_score_difference,
    metric,
    network_attempts,
    network_blocked_environment,
    run_anomalib,
)
from model_utils import short_fit_engine
from torch import nn
from torchvision.transforms.v2 import functional as TF

from anomalib_firm.models import MSC, Msc
from anomalib_firm.models.components.backbones import pretrained_weights
from anomalib_firm.models.components.lifecycle.contrastive_mixin import NormalBatch
from anomalib_firm.models.image.msc.loss import compute_center

IMAGE_SIZE = 16
# A small, dependency-free network for the CLI: random init (MSC warns about it), everything trained.
TINY_MSC = [
    "--model.backbone", "resnet18",
    "--model.weights", "random",
    "--model.image_size", str(IMAGE_SIZE),
    "--model.lr", "0.001",
    "--model.visualizer", "false",
]  # fmt: skip


def _msc(backbone: str = "resnet18", weights: str | None = "random", **kwargs) -> Msc:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*MSC needs ImageNet pretraining")
        model = Msc(backbone=backbone, weights=weights, image_size=IMAGE_SIZE, visualizer=False, **kwargs)
        model.load_pretrained_weights()  # random: nothing to load (it would warn when training starts)
    return model


def _fit(model: Msc, root: Path, tmp_path: Path, steps: int = 1) -> Engine:
    engine = short_fit_engine(tmp_path, train_batches=steps)
    engine.fit(model, datamodule=digits_folder_datamodule(root, train_batch_size=16, eval_batch_size=32))
    return engine


def _normal_images(root: Path) -> torch.Tensor:
    """The normal training images, resized as the pre-processor does, in [0, 1]."""
    from PIL import Image

    paths = sorted((root / "train" / "good").glob("*.png"))
    images = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
    images = images.float() / 255
    return TF.resize(images, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)


def _batchnorm_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: buffer.clone()
        for name, buffer in module.named_buffers()
        if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
    }


# --------------------------------------------------------------------------------- training in Lightning
def test_training_keeps_frozen_layers_batchnorm_statistics_and_centre(digits_folder, tmp_path):
    # Random init: BatchNorm running statistics start at (0, 1), so a BN layer in train mode would move them.
    model = _msc(frozen_modules=["conv1", "bn1", "layer1"], lr=0.05)
    trained_parameter = "layer4.1.conv2.weight"
    network = model.model.backbone
    frozen = network.frozen_modules
    assert frozen
    before = {name: value.detach().clone() for name, value in network.body.named_parameters()}
    bn_before = _batchnorm_buffers(network)
    with torch.no_grad():
        expected_center = compute_center(model.model.eval().features(_normal_images(digits_folder)))
    model.train()
    assert not model.model.has_center

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters_before = list(warnings.filters)
        _fit(model, digits_folder, tmp_path)
        assert warnings.filters == filters_before  # the filter that hid the note is gone again
    assert not [w for w in caught if "in eval mode" in str(w.message)]  # the frozen BatchNorm layers: no note

    assert model.global_step == 1
    for name, value in network.body.named_parameters():
        is_frozen = name.startswith(tuple(f"{module}." for module in frozen))
        assert value.requires_grad == (not is_frozen), name
        if is_frozen:
            assert torch.equal(value, before[name]), f"frozen parameter {name} changed"
    assert not torch.equal(dict(network.body.named_parameters())[trained_parameter], before[trained_parameter])
    # Lightning switched the model to train mode, yet no BatchNorm layer updated its running statistics.
    for name, value in _batchnorm_buffers(network).items():
        assert torch.equal(value, bn_before[name]), f"BatchNorm statistic {name} changed"
    # The centre is the pretrained network's, computed before the first step and never updated.
    torch.testing.assert_close(model.model.center, expected_center, atol=1e-6, rtol=0)
    with torch.no_grad():
        centre_now = compute_center(model.model.eval().features(_normal_images(digits_folder)))
    assert not torch.allclose(centre_now, expected_center, atol=1e-4)  # the network did change

    # A resumed fit (centre already set, e.g. from a checkpoint) keeps the centre.
    stored = model.model.center.clone()
    _fit(model, digits_folder, tmp_path / "resumed", steps=1)
    assert torch.equal(model.model.center, stored)


def test_optimizer_is_plain_sgd_over_trainable_parameters():
    model = _msc(frozen_modules=["conv1", "bn1", "layer1", "layer2"])
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["momentum"]) == (1e-5, 5e-5, 0.0)
    trainable = {id(p) for p in model.model.parameters() if p.requires_grad}
    assert {id(p) for p in group["params"]} == trainable
    assert len(trainable) < len(list(model.model.parameters()))


def test_paper_defaults_and_alias():
    defaults = {name: p.default for name, p in inspect.signature(Msc.__init__).parameters.items()}
    assert defaults["backbone"] == "resnet152"
    assert defaults["weights"] == "imagenet"
    assert defaults["frozen_modules"] == "msc"
    assert defaults["image_size"] == 224
    assert defaults["temperature"] == 0.25
    assert defaults["num_neighbors"] == 2
    assert defaults["eval_zoom"] == pytest.approx(256 / 224)
    assert (defaults["lr"], defaults["weight_decay"], defaults["momentum"]) == (1e-5, 5e-5, 0.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*MSC needs ImageNet pretraining")
        model = MSC(backbone="resnet18", weights=None, image_size=IMAGE_SIZE, num_neighbors=3, visualizer=False)
    assert model.name == "Msc"
    assert isinstance(model, Msc)
    assert model.min_train_images == 3
    assert model.model.backbone.frozen_modules == ()  # ResNet-18: the paper trains everything


# --------------------------------------------------------------------------------- scoring
def test_evaluation_view_is_resize_256_centre_crop_224():
    model = _msc().model
    images = torch.rand(2, 3, 224, 224)
    expected = TF.center_crop(TF.resize(images, [256, 256], antialias=True), [224, 224])
    torch.testing.assert_close(model.evaluation_view(images), expected, atol=1e-4, rtol=0)


def test_score_is_sum_of_squared_distances_to_two_nearest_normalised_features():
    model = _msc().eval()
    normal, queries = torch.rand(6, 3, IMAGE_SIZE, IMAGE_SIZE), torch.rand(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        model.fit_scorer(iter([NormalBatch(normal[:4]), NormalBatch(normal[4:])]))
        bank = model.model.bank.features[0]
        assert bank.shape == (6, 512)
        torch.testing.assert_close(bank.norm(dim=1), torch.ones(6))  # normalised, not mean-shifted
        features = model.model.features(queries)
        expected = (torch.cdist(features, bank) ** 2).topk(2, largest=False).values.sum(dim=1)
        scores = model.model(queries).pred_score
        torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
        # A bank image is at distance 0 from itself: its score is its nearest other neighbour's distance.
        assert model.model(normal[:1]).pred_score.item() < scores.max().item()


def test_centre_and_bank_travel_in_the_state_dict():
    trained = _msc().eval()
    with torch.no_grad():
        trained.compute_center(iter([torch.rand(4, 3, IMAGE_SIZE, IMAGE_SIZE)]))
        trained.fit_scorer(iter([NormalBatch(torch.rand(5, 3, IMAGE_SIZE, IMAGE_SIZE))]))
    fresh = _msc()
    assert not fresh.model.has_center
    assert fresh.scorer_is_empty()
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.model.center, trained.model.center)
    assert fresh.model.bank.size == 5
    assert not fresh.scorer_is_empty()


def test_bad_settings():
    with pytest.raises(ValueError, match="num_neighbors"):
        _msc(num_neighbors=0)
    with pytest.raises(ValueError, match="temperature"):
        _msc(temperature=0)
    with pytest.raises(ValueError, match="no such sub-module"):
        _msc(frozen_modules=["layer9"])
    model = _msc()
    with pytest.raises(ValueError, match="centre must have shape"):
        model.model.set_center(torch.zeros(3))


# --------------------------------------------------------------------------------- pretrained weights and checkpoints
def _backbone_state(model: Msc) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.model.backbone.body.state_dict().items()}


def _count_weight_file_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every weight file the pretrained loader reads."""
    reads: list[str] = []
    original = pretrained_weights.load_state_dict_file

    def counting(path: str | Path) -> dict[str, torch.Tensor]:
        reads.append(str(path))
        return original(path)

    monkeypatch.setattr(pretrained_weights, "load_state_dict_file", counting)
    return reads


def test_pretrained_weights_load_when_training_starts_before_the_centre(digits_folder, tmp_path, monkeypatch):
    from torchvision.models import resnet18

    torch.manual_seed(3)
    weights_file = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), weights_file)
    reads = _count_weight_file_reads(monkeypatch)
    model = Msc(backbone="resnet18", weights=weights_file, image_size=IMAGE_SIZE, lr=0.0, visualizer=False)
    assert reads == []  # building reads nothing
    assert not model.model.weights_loaded

    _fit(model, digits_folder, tmp_path)

    assert reads == [str(weights_file)]
    expected = torch.load(weights_file, weights_only=True)
    for name, value in model.model.backbone.body.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=0, rtol=0, msg=name)  # lr = 0: the file's weights
    with torch.no_grad():
        # The centre came from the loaded network, i.e. the weights were there before it was computed.
        expected_center = compute_center(model.model.eval().features(_normal_images(digits_folder)))
    torch.testing.assert_close(model.model.center, expected_center, atol=1e-6, rtol=0)


def test_checkpoint_weights_are_never_replaced_by_pretrained_ones(digits_folder, tmp_path, monkeypatch):
    trained = _msc()
    reads = _count_weight_file_reads(monkeypatch)
    # A weights file that does not exist here (as on a machine other than the training one): never opened.
    restored = Msc(backbone="resnet18", weights=tmp_path / "gone.pth", image_size=IMAGE_SIZE, lr=0.0, visualizer=False)
    restored.load_state_dict(trained.state_dict())
    assert restored.model.weights_loaded

    _fit(restored, digits_folder, tmp_path)  # resumed training: no pretrained weights loaded

    assert reads == []
    for name, value in _backbone_state(restored).items():
        assert torch.equal(value, trained.model.backbone.body.state_dict()[name]), name


@pytest.fixture(scope="module")
def small_checkpoint(digits_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-18 MSC (16 px) trained for one step in-process, saved as a Lightning checkpoint."""
    workdir = tmp_path_factory.mktemp("msc_checkpoint")
    torch.manual_seed(0)
    engine = _fit(_msc(), digits_folder, workdir)
    path = workdir / "msc.ckpt"
    engine.trainer.save_checkpoint(path)
    return path


def _test_engine(tmp_path: Path) -> Engine:
    return Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)


def test_checkpoint_of_another_backbone_fails_with_the_settings_to_pass(small_checkpoint, digits_folder, tmp_path):
    model = _msc(backbone="resnet34")
    datamodule = digits_folder_datamodule(digits_folder, train_batch_size=16, eval_batch_size=32)
    with pytest.raises(ValueError, match="holds another network") as error:
        _test_engine(tmp_path).test(model, datamodule=datamodule, ckpt_path=small_checkpoint)
    message = str(error.value)
    assert "trained with backbone='resnet18'" in message
    assert "built with backbone='resnet34'" in message
    assert "`--model.backbone resnet18`" in message
    assert "Msc(backbone='resnet18', ...)" in message
    assert str(small_checkpoint) in message


def test_default_backbone_is_rebuilt_from_the_checkpoint(small_checkpoint, digits_folder, tmp_path):
    model = Msc(visualizer=False)  # what `anomalib test --model MSC --ckpt_path ...` builds: ResNet-152, 224 px
    datamodule = digits_folder_datamodule(digits_folder, train_batch_size=16, eval_batch_size=32)
    results = _test_engine(tmp_path).test(model, datamodule=datamodule, ckpt_path=small_checkpoint)

    assert model.model.backbone.backbone_name == "resnet18"
    assert (model.hparams["backbone"], model.hparams["weights"], model.hparams["image_size"]) == (
        "resnet18",
        "random",
        16,
    )
    assert model.model.backbone.frozen_modules == ()  # the checkpoint's frozen_modules="msc" rule for ResNet-18
    saved = torch.load(small_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.model.center, saved["model.center"])
    assert torch.equal(model.model.backbone.body.conv1.weight, saved["model.backbone.body.conv1.weight"])
    assert results[0]["image_AUROC"] > 0.8  # digit 0 against the rest, scored by the checkpoint's network


# --------------------------------------------------------------------------------- the stock anomalib CLI
@pytest.fixture(scope="module")
def trained(digits_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Train once with ``anomalib train --model MSC``; return (workdir, checkpoint, output)."""
    workdir = tmp_path_factory.mktemp("msc_cli")
    result = run_anomalib(
        ["train", "--model", "MSC", *TINY_MSC, *folder_data_args(digits_folder),
         "--trainer.max_epochs", "1", "--seed_everything", "0"],
        workdir,
    )  # fmt: skip
    checkpoints = sorted(workdir.glob("results/Msc/digits/v*/weights/lightning/model.ckpt"))
    assert checkpoints, result.stdout[-2000:]
    return workdir, checkpoints[-1], result.stdout


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``run_anomalib`` commands cannot reach the Internet nor find cached weights; returns the log folder."""
    for name, value in network_blocked_environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    return tmp_path


# The checkpoint's network, without `--model.weights`: its default, "imagenet", is a download.
CHECKPOINT_NETWORK = ["--model.backbone", "resnet18", "--model.image_size", str(IMAGE_SIZE)]


@pytest.mark.slow
def test_cli_train_then_test_from_checkpoint_offline(trained, digits_folder, offline):
    workdir, checkpoint, output = trained
    assert 0.8 < metric(output, "image_AUROC") <= 1.0  # digit 0 against the rest: far above chance
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)  # nothing allow-listed
    assert saved["anomalib_firm_model"] == "Msc"
    assert "random_states" in saved["anomalib_firm_resume"]
    state = saved["state_dict"]
    assert state["model.center"].shape == (512,)
    assert state["model.bank.features"].shape == (1, 40, 512)
    tested = run_anomalib(
        ["test", "--model", "Msc", *CHECKPOINT_NETWORK, "--model.visualizer", "false",
         *folder_data_args(digits_folder), "--ckpt_path", str(checkpoint)],
        workdir,
    )  # fmt: skip
    # Same weights, same bank (from the checkpoint): the same AUROC as right after training.
    assert metric(tested.stdout, "image_AUROC") == pytest.approx(metric(output, "image_AUROC"), abs=1e-4)
    assert network_attempts(offline) == []


@pytest.mark.slow
def test_cli_predict_with_default_model_settings_offline(trained, digits_folder, offline):
    workdir, checkpoint, _ = trained
    # No --model settings at all: the default ResNet-152 is rebuilt as the checkpoint's ResNet-18, nothing fetched.
    run_anomalib(
        ["predict", "--model", "MSC", "--data", str(digits_folder / "test"), "--ckpt_path", str(checkpoint),
         "--default_root_dir", str(workdir / "predicted")],
        workdir,
    )  # fmt: skip
    # The visualiser wrote one picture per image, scored by the checkpoint's network.
    written = sorted(path.name for path in (workdir / "predicted").rglob("*.png"))
    assert written == sorted(path.name for path in (digits_folder / "test").rglob("*.png"))
    assert network_attempts(offline) == []


@pytest.mark.slow
def test_cli_openvino_export_offline_matches_torch(trained, digits_folder, offline, monkeypatch):
    workdir, checkpoint, _ = trained
    monkeypatch.chdir(workdir)  # OpenVINOInferencer writes ./openvino_cache
    run_anomalib(
        ["export", "--model", "MSC", "--export_type", "openvino",
         "--ckpt_path", str(checkpoint), "--input_size", "[16,16]"],
        workdir,
    )  # fmt: skip
    assert network_attempts(offline) == []
    xml = checkpoint.parents[1] / "openvino" / "model.xml"  # beside the checkpoint, in its run folder
    assert xml.exists()
    model = Msc.load_from_checkpoint(checkpoint)
    # The graph holds the resize (identity here), the centre crop, the encoder and the k-NN score.
    assert max_openvino_score_difference(xml, model, folder_test_images(digits_folder)) < 1e-4


@pytest.mark.slow
def test_cli_pretrained_weights_unavailable_offline_is_one_message(digits_folder, offline, tmp_path):
    """Offline with no cached weights: what to pass instead, without a traceback (exit status 1)."""
    (tmp_path / "run").mkdir()
    result = run_anomalib(
        ["train", "--model", "MSC", *CHECKPOINT_NETWORK, "--model.visualizer", "false",
         *folder_data_args(digits_folder), "--trainer.max_epochs", "1"],
        tmp_path / "run",
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "Error: Could not download the ImageNet weights of backbone 'resnet18'" in result.stderr
    assert "weights=<path to .pth>" in result.stderr
    missing = tmp_path / "missing.pth"
    result = run_anomalib(
        ["train", "--model", "MSC", *CHECKPOINT_NETWORK, "--model.weights", str(missing),
         "--model.visualizer", "false", *folder_data_args(digits_folder), "--trainer.max_epochs", "1"],
        tmp_path / "run",
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert f"Error: Weights file not found: {missing}" in result.stderr
